"""Rule report_lp: soups/grid.tsv, metrics/all.tsv, the accuracy table and the soup-line figures."""

from robustsoup.lp.stages import report_lp
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        out, params = snakemake.output, snakemake.params
        report_lp(
            job.config,
            params.models,
            params.studies,
            out.all,
            out.grid,
            list(snakemake.input.sidecars),
            out.table_md,
            list(out.figures),
        )
