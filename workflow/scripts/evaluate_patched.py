"""Rule evaluate_patched: the standard model patched with each signature of one variant, then unpatched."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import evaluate_patched
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        evaluate_patched(
            job.config,
            snakemake.wildcards.rws_variant,
            snakemake.input.standard,
            dict(snakemake.params.signatures),
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
            points_path=snakemake.output.points,
        )
