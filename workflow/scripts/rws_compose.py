"""Rule rws_compose: two signatures added together on a grid of coefficients."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import compose_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        signatures = dict(zip(job.config["rws"]["compose"], snakemake.input.signatures))  # noqa: F821
        compose_stage(job.config, snakemake.input.standard, signatures, snakemake.input.test,  # noqa: F821
                      Path(snakemake.input.corrupted[-1]).parent, snakemake.output.rows, job.device)  # noqa: F821
