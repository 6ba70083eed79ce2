"""Rule rws_lambda_sweep: accuracy of the standard model + λ·RWS against λ, per severity."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import lambda_sweep_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        signatures = dict(zip(job.config["rws"]["corruptions"], snakemake.input.signatures))  # noqa: F821
        lambda_sweep_stage(job.config, snakemake.input.standard, signatures, snakemake.input.test,  # noqa: F821
                           Path(snakemake.input.corrupted[-1]).parent, snakemake.output.rows,  # noqa: F821
                           job.device)
