"""Rule evaluate_ternary: clean, robust and union accuracy over the triangle of three models."""

from robustsoup.snakemake_job import snakemake_job
from robustsoup.soups.stages import evaluate_ternary

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        models = dict(snakemake.params.models)
        evaluate_ternary(job.config, models, snakemake.input.test, snakemake.output.metrics, job.device)
