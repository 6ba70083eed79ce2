"""Rule report_findings: the papers' claims F1–F5 as verdicts with paired bootstrap intervals (CSV, Markdown, HTML)."""

from robustsoup.findings import report_findings
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        output = snakemake.output
        report_findings(job.config, output.table_csv, output.table_md, output.table_page)
