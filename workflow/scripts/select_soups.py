"""Rule select_soups: score the soup grid on every shift's adaptation images, run every selection method."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.snakemake_job import snakemake_job
    from robustsoup.soups.stages import select_soups

    with snakemake_job(snakemake) as job:
        params, output = snakemake.params, snakemake.output
        select_soups(
            job.config,
            dict(params.models),
            snakemake.input.adapt,
            snakemake.input.get("corrupted"),
            output.scores,
            output.selection,
            job.device,
            shifts=dict(params.shifts),
        )
