"""Rule make_soup: mix the base models into one soup checkpoint."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.snakemake_job import snakemake_job
    from robustsoup.soups.stages import make_soup

    with snakemake_job(snakemake) as job:
        params = snakemake.params
        make_soup(
            job.config,
            snakemake.wildcards.soup,
            dict(params.weights),
            dict(params.ingredients),
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
