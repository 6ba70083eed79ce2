"""Rule report_distill: metrics/distill.tsv, the robust-distillation table (CSV + Markdown + HTML page)
and its figure (PNG + PDF + HTML page)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.distill.stages import report_distill
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        report_distill(
            job.config,
            list(snakemake.input.metrics),
            snakemake.output.all,
            list(snakemake.input.sidecars),
            list(snakemake.input.summaries),
            snakemake.output.table_md,
            snakemake.output.figure,
        )
