"""Rule rws_lambda_sweep: accuracy of the standard model + λ·RWS against λ, per severity."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import rws_lambda_sweep
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        rws_lambda_sweep(
            job.config,
            snakemake.input.standard,
            dict(snakemake.params.signatures),
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
        )
