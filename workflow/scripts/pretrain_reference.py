"""Rule pretrain_reference: a from-scratch reference model for one target norm, with the parent's budget."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.lp.stages import pretrain_reference
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        pretrain_reference(
            job.config, snakemake.wildcards.reference, snakemake.input.train, snakemake.output.weights, job.device
        )
