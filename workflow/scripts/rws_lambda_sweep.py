"""Rule rws_lambda_sweep: accuracy of the standard model + λ·RWS against λ, per severity."""

from pathlib import Path

from robustsoup.rws.stages import rws_lambda_sweep
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        signatures = dict(zip(job.config["rws"]["corruptions"], snakemake.input.signatures))
        rws_lambda_sweep(
            job.config,
            snakemake.input.standard,
            signatures,
            snakemake.input.test,
            Path(snakemake.input.corrupted[-1]).parent,
            snakemake.output.rows,
            job.device,
        )
