"""Rule evaluate_rws_model: clean and corrupted test accuracy of a standard, augmentation or expert model."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import evaluate_model_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        evaluate_model_stage(job.config, snakemake.wildcards.rws_model, snakemake.input.weights,  # noqa: F821
                             snakemake.input.test, Path(snakemake.input.corrupted[-1]).parent,  # noqa: F821
                             snakemake.output.rows, job.device)  # noqa: F821
