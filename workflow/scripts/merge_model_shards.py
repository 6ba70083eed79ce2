"""Rule merge_model_shards: one model's evaluation shards joined into evaluate_model's files."""

from robustsoup.lp.stages import merge_model_shards
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        threats = ["clean", *job.config["evaluate"]["threats"]]
        shards = {t: (list(snakemake.input[f"{t}_rows"]), list(snakemake.input[f"{t}_points"])) for t in threats}
        outputs = {t: (snakemake.output[f"{t}_rows"], snakemake.output[f"{t}_points"]) for t in threats}
        merge_model_shards(job.config, shards, outputs)
