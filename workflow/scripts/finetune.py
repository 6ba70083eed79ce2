"""Rule finetune: fine-tune the parent towards one target threat model."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.lp.stages import finetune
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        finetune(
            job.config,
            snakemake.wildcards.target,
            snakemake.input.parent,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
