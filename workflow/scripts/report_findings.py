"""Rule report_findings: the papers' claims F1–F5 as verdicts with paired bootstrap intervals (CSV, Markdown, HTML)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.findings import report_findings
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        output = snakemake.output
        report_findings(job.config, output.table_csv, output.table_md, output.table_page)
