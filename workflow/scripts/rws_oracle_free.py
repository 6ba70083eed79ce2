"""Rule rws_oracle_free: a corruption classifier on shallow features picks the signature and λ per batch."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import rws_oracle_free
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        inp, out = snakemake.input, snakemake.output
        rws_oracle_free(
            job.config,
            inp.standard,
            dict(snakemake.params.signatures),
            inp.adapt,
            snakemake.input.corrupted_adapt,
            inp.test,
            snakemake.input.corrupted,
            out.rows,
            out.detector,
            out.classifier,
            job.device,
        )
