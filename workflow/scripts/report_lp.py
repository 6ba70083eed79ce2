"""Rule report_lp: metrics/all.tsv and the accuracy table."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.lp.stages import report_lp
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        params = snakemake.params
        report_lp(
            job.config,
            params.models,
            params.studies,
            params.soups,
            snakemake.output.all,
            list(snakemake.input.sidecars),
            snakemake.output.table_md,
        )
