"""Rule report: the accuracy table and the soup-line figures."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.stages import build_report

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        table_stem = Path(snakemake.output.tables[0]).with_suffix("")  # noqa: F821
        build_report(
            job.config, snakemake.input.metrics, snakemake.input.grid,  # noqa: F821
            list(snakemake.input.sidecars), table_stem,  # noqa: F821
            list(snakemake.output.figures),  # noqa: F821
        )
