"""Rule select_soups: score the soup grid on every shift's adaptation images, run every selection method."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.soup_stages import select_soups

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inputs = snakemake.input  # noqa: F821
        paths = {Path(p).stem: p for p in inputs.models}
        corrupted = Path(inputs.corrupted[0]).parent if inputs.corrupted else None
        select_soups(job.config, paths, inputs.adapt, corrupted, snakemake.output.scores,  # noqa: F821
                     snakemake.output.selection, job.device)  # noqa: F821
