"""Rule evaluate_model_shard: evaluate_model's files for one shard of a model's test points."""

from robustsoup.lp.stages import evaluate_model_shard
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        threats = ["clean", *job.config["evaluate"]["threats"]]
        outputs = {t: (snakemake.output[f"{t}_rows"], snakemake.output[f"{t}_points"]) for t in threats}
        evaluate_model_shard(
            job.config, snakemake.params.shard, snakemake.input.weights, snakemake.input.test, outputs, job.device
        )
