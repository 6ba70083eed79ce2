"""Rule rws_compose: two signatures added together on a grid of coefficients."""

from pathlib import Path

from robustsoup.rws.stages import rws_compose
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        signatures = dict(zip(job.config["rws"]["compose"], snakemake.input.signatures))
        rws_compose(
            job.config,
            snakemake.input.standard,
            signatures,
            snakemake.input.test,
            Path(snakemake.input.corrupted[-1]).parent,
            snakemake.output.rows,
            job.device,
        )
