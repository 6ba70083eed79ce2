"""Rule merge_model_shards: one model's evaluation shards joined into evaluate_model's files."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.lp.stages import merge_model_shards
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        threats = ["clean", *job.config["evaluate"]["threats"]]
        shards = {t: (list(snakemake.input[f"{t}_rows"]), list(snakemake.input[f"{t}_points"])) for t in threats}
        outputs = {t: (snakemake.output[f"{t}_rows"], snakemake.output[f"{t}_points"]) for t in threats}
        merge_model_shards(job.config, shards, outputs)
