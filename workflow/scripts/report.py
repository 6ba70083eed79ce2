"""Rule report: soups/grid.tsv, metrics/all.tsv, the accuracy table and the soup-line figures."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.stages import build_report

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        out, params = snakemake.output, snakemake.params  # noqa: F821
        build_report(
            job.config, params.models, Path(out.all).parent, params.studies, out.all, out.grid,
            list(snakemake.input.sidecars), Path(out.tables[0]).with_suffix(""), list(out.figures),  # noqa: F821
        )
