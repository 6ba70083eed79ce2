"""Rule select_soups: score the soup grid on every shift's adaptation images, run every selection method."""

from robustsoup.snakemake_job import snakemake_job
from robustsoup.soups.stages import select_soups

if __name__ == "__main__":
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
