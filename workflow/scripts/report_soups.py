"""Rule report_soups: the soups paper's table, the composition and ternary figures."""

from robustsoup.snakemake_job import snakemake_job
from robustsoup.soups.stages import report_soups

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inputs, params = snakemake.input, snakemake.params
        report_soups(
            job.config,
            inputs.shifts,
            inputs.models,
            inputs.selection,
            inputs.get("ternary"),
            snakemake.output.table_md,
            params.figures["soup_composition"],
            params.figures.get("soup_ternary"),
        )
