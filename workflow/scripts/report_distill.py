"""Rule report_distill: metrics/distill.tsv and the robust-distillation table (CSV + Markdown)."""

from pathlib import Path

from robustsoup.distill_stages import report_distill_stage
from robustsoup.job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        report_distill_stage(
            job.config, list(snakemake.input.metrics), snakemake.output.all,  # noqa: F821
            list(snakemake.input.sidecars),  # noqa: F821
            list(snakemake.input.summaries), Path(snakemake.output.tables[0]).with_suffix(""),  # noqa: F821
        )
