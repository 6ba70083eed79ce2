"""Rule corrupt_split: corrupted copies of one split in Hendrycks' layout."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.data.stages import corrupt_split
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        corrupt_split(job.config, snakemake.input.split, snakemake.output.corrupted)
