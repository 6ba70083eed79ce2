"""Rule rws_compose: two signatures added together on a grid of coefficients."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import rws_compose
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        rws_compose(
            job.config,
            snakemake.input.standard,
            dict(snakemake.params.signatures),
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
        )
