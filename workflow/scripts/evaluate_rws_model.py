"""Rule evaluate_rws_model: clean and corrupted test accuracy of a standard, augmentation or expert model."""

from robustsoup.rws.stages import evaluate_rws_model
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        evaluate_rws_model(
            job.config,
            snakemake.wildcards.rws_model,
            snakemake.input.weights,
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
            points_path=snakemake.output.points,
        )
