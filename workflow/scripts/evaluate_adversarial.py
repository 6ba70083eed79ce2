"""Rule evaluate_adversarial: robust accuracy of one model under one norm, with per-point results."""

from robustsoup.job import snakemake_job
from robustsoup.stages import evaluate_adversarial_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        evaluate_adversarial_stage(
            job.config, snakemake.wildcards.norm, snakemake.input.weights, snakemake.input.test,  # noqa: F821
            snakemake.output.rows, snakemake.output.points, job.device,  # noqa: F821
        )
