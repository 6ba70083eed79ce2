"""Rule report_soups: the soups paper's table, the composition and ternary figures."""

from pathlib import Path

from robustsoup.snakemake_job import snakemake_job
from robustsoup.soups.stages import report_soups

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inputs, output = snakemake.input, snakemake.output
        figures = [f for f in output.figures if f.endswith(".png")]
        report_soups(
            job.config,
            inputs.shifts,
            inputs.models,
            inputs.selection,
            inputs.ternary[0] if inputs.ternary else None,
            Path(output.tables[0]).with_suffix(""),
            figures[0],
            figures[1] if len(figures) > 1 else None,
        )
