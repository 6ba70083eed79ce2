"""Rule evaluate_model: clean and per-norm robust accuracy of one model, with per-point results."""

from robustsoup.job import snakemake_job
from robustsoup.stages import evaluate_model

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        threats = ["clean", *job.config["evaluate"]["threats"]]
        outputs = {t: (snakemake.output[f"{t}_rows"], snakemake.output[f"{t}_points"]) for t in threats}  # noqa: F821
        evaluate_model(job.config, snakemake.input.weights, snakemake.input.test, outputs, job.device)  # noqa: F821
