"""Rule evaluate_ternary: clean, robust and union accuracy over the triangle of three models."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.soup_stages import evaluate_ternary

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inputs = snakemake.input  # noqa: F821
        paths = {Path(p).stem: p for p in inputs.models}
        evaluate_ternary(job.config, paths, inputs.test, snakemake.output.metrics, job.device)  # noqa: F821
