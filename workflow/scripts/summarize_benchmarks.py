"""Rule summarize_benchmarks: wall time and memory of every job, per rule (CSV + HTML page)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.report.benchmarks import summarize_benchmarks
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake):
        summarize_benchmarks(
            snakemake.params.folder, snakemake.output.table, snakemake.params.logs, snakemake.output.page
        )
