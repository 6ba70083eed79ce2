"""Rule rws_transfer: signatures extracted against `standard` patched onto other standard models."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import rws_transfer
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        inp = snakemake.input
        rws_transfer(
            job.config,
            list(inp.targets),
            dict(snakemake.params.signatures),
            inp.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
        )
