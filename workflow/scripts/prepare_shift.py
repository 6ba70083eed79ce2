"""Rule prepare_shift: the adapt / test split of every part of one shifted data set."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.data.stages import prepare_shift
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        prepare_shift(job.config, snakemake.wildcards.shift, snakemake.output.splits)
