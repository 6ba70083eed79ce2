"""Rule train_rws_model: the standard model, the augmentation baseline or a transfer target, from its init."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import train_rws_model
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        train_rws_model(
            job.config,
            snakemake.wildcards.rws_model,
            snakemake.input.init,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
