"""Rule summarize_benchmarks: wall time and memory of every job, per rule (CSV + HTML page)."""

from robustsoup.report.benchmarks import summarize_benchmarks
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake):
        summarize_benchmarks(
            snakemake.params.folder, snakemake.output.table, snakemake.params.logs, snakemake.output.page
        )
