"""Rule evaluate_soups_shifts: held-out accuracy of base models, ensembles and chosen soups per shift."""

from pathlib import Path

from robustsoup.snakemake_job import snakemake_job
from robustsoup.soups.stages import evaluate_soups_shifts

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inputs, output = snakemake.input, snakemake.output
        paths = {Path(p).stem: p for p in inputs.models}
        corrupted = Path(inputs.corrupted[0]).parent if inputs.corrupted else None
        evaluate_soups_shifts(
            job.config, paths, inputs.test, corrupted, inputs.selection, output.metrics, output.models, job.device
        )
