"""Rule evaluate: clean, per-norm robust and union accuracy of one model."""

from robustsoup.job import snakemake_job
from robustsoup.stages import evaluate_checkpoint

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        evaluate_checkpoint(
            job.config, snakemake.input.weights, snakemake.input.test,  # noqa: F821
            snakemake.output.metrics, job.device,  # noqa: F821
        )
