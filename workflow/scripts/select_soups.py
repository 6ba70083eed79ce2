"""Rule select_soups: score the soup grid on every shift's adaptation images, run every selection method."""

from pathlib import Path

from robustsoup.snakemake_job import snakemake_job
from robustsoup.soups.stages import select_soups

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inputs = snakemake.input
        paths = {Path(p).stem: p for p in inputs.models}
        corrupted = Path(inputs.corrupted[0]).parent if inputs.corrupted else None
        select_soups(
            job.config, paths, inputs.adapt, corrupted, snakemake.output.scores, snakemake.output.selection, job.device
        )
