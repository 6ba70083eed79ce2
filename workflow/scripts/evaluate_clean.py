"""Rule evaluate_clean: clean accuracy of one model, with per-point results."""

from robustsoup.job import snakemake_job
from robustsoup.stages import evaluate_clean_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        evaluate_clean_stage(
            job.config, snakemake.input.weights, snakemake.input.test,  # noqa: F821
            snakemake.output.rows, snakemake.output.points, job.device,  # noqa: F821
        )
