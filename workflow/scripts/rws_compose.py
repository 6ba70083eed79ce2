"""Rule rws_compose: two signatures added together on a grid of coefficients."""

from robustsoup.rws.stages import rws_compose
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        rws_compose(
            job.config,
            snakemake.input.standard,
            dict(snakemake.params.signatures),
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
        )
