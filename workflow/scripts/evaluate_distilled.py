"""Rule evaluate_distilled: clean and corrupted accuracy of one distillation model (every head rule)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.distill.stages import evaluate_distilled
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        inputs, output = snakemake.input, snakemake.output
        multihead = "adapt" in inputs.keys()  # noqa: SIM118 (a Namedlist: `in` would look at the values)
        evaluate_distilled(
            job.config,
            inputs.weights,
            inputs.test,
            inputs.corrupted_test,
            output.rows,
            output.summary,
            job.device,
            adapt_path=inputs.adapt if multihead else None,
            corrupted_adapt_dir=inputs.corrupted_adapt if multihead else None,
            points_path=output.points,
        )
