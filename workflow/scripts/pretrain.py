"""Rule pretrain: adversarial training of the parent model."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.lp.stages import pretrain
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        pretrain(job.config, snakemake.input.train, snakemake.output.weights, job.device)
