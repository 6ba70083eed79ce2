"""Rule evaluate_model: clean and per-norm robust accuracy of one model, with per-point results."""

from robustsoup.lp.stages import evaluate_model
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        threats = ["clean", *job.config["evaluate"]["threats"]]
        outputs = {t: (snakemake.output[f"{t}_rows"], snakemake.output[f"{t}_points"]) for t in threats}
        evaluate_model(job.config, snakemake.input.weights, snakemake.input.test, outputs, job.device)
