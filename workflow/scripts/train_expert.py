"""Rule train_expert: one corruption expert, fine-tuned from the shared init on that corruption."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import train_expert
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        train_expert(
            job.config,
            snakemake.wildcards.rws_corruption,
            snakemake.input.init,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
            adapt_path=snakemake.input.get("adapt"),
            validation_dir=snakemake.input.get("validation"),
        )
