"""Rule evaluate_model_shard: evaluate_model's files for one shard of a model's test points."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.lp.stages import evaluate_model_shard
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        threats = ["clean", *job.config["evaluate"]["threats"]]
        outputs = {t: (snakemake.output[f"{t}_rows"], snakemake.output[f"{t}_points"]) for t in threats}
        evaluate_model_shard(
            job.config, snakemake.params.shard, snakemake.input.weights, snakemake.input.test, outputs, job.device
        )
