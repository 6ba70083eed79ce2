"""Rule summarize_benchmarks: wall time and memory of every job, per rule."""

from robustsoup.job import snakemake_job
from robustsoup.report.benchmarks import summarize_benchmarks

if __name__ == "__main__":
    with snakemake_job(snakemake):  # noqa: F821
        summarize_benchmarks(snakemake.params.folder, snakemake.output.table, snakemake.params.logs)  # noqa: F821
