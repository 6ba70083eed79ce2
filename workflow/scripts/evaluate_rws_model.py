"""Rule evaluate_rws_model: clean and corrupted test accuracy of a standard, augmentation or expert model."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import evaluate_rws_model
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        evaluate_rws_model(
            job.config,
            snakemake.wildcards.rws_model,
            snakemake.input.weights,
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
            points_path=snakemake.output.points,
        )
