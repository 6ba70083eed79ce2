"""Rule evaluate_ternary: clean, robust and union accuracy over the triangle of three models."""

from pathlib import Path

from robustsoup.snakemake_job import snakemake_job
from robustsoup.soups.stages import evaluate_ternary

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inputs = snakemake.input
        paths = {Path(p).stem: p for p in inputs.models}
        evaluate_ternary(job.config, paths, inputs.test, snakemake.output.metrics, job.device)
