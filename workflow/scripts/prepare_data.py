"""Rule prepare_data: read the data set once and write its train / adapt / test splits."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.data.stages import prepare_data
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        prepare_data(job.config, dict(snakemake.output.items()))
