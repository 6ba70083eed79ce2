"""Rule rws_lambda_sweep: accuracy of the standard model + λ·RWS against λ, per severity."""

from robustsoup.rws.stages import rws_lambda_sweep
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        rws_lambda_sweep(
            job.config,
            snakemake.input.standard,
            dict(snakemake.params.signatures),
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
        )
