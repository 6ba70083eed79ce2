"""Rule report_seeds: every seed's rows in one ledger, and every seed's table as mean ± sd over the seeds."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.report.seeds import report_seeds
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake):
        params = snakemake.params
        report_seeds(params.ledgers, snakemake.output.ledger, params.tables, params.outputs)
