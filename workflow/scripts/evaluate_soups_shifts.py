"""Rule evaluate_soups_shifts: held-out accuracy of base models, ensembles and chosen soups per shift."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.soup_stages import evaluate_soups_on_shifts

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inputs, output = snakemake.input, snakemake.output  # noqa: F821
        paths = {Path(p).stem: p for p in inputs.models}
        corrupted = Path(inputs.corrupted[0]).parent if inputs.corrupted else None
        evaluate_soups_on_shifts(job.config, paths, inputs.test, corrupted, inputs.selection,
                                 output.metrics, output.models, job.device)
