"""Rule train_rws_init: the shared initialization of the RWS models (or a transfer target's own)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import train_rws_init
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        train_rws_init(
            job.config, snakemake.wildcards.rws_init, snakemake.input.train, snakemake.output.weights, job.device
        )
