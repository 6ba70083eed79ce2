"""Rule evaluate_soups_shifts: held-out accuracy of base models, ensembles and chosen soups per shift."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.snakemake_job import snakemake_job
    from robustsoup.soups.stages import evaluate_soups_shifts

    with snakemake_job(snakemake) as job:
        inputs, params, output = snakemake.input, snakemake.params, snakemake.output
        evaluate_soups_shifts(
            job.config,
            dict(params.models),
            inputs.test,
            inputs.get("corrupted"),
            inputs.selection,
            output.metrics,
            output.models,
            job.device,
            shifts=dict(params.shifts),
            points_path=output.points,
        )
