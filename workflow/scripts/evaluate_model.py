"""Rule evaluate_model: clean and per-norm robust accuracy of one model, with per-point results."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.lp.stages import evaluate_model
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        threats = ["clean", *job.config["evaluate"]["threats"]]
        outputs = {t: (snakemake.output[f"{t}_rows"], snakemake.output[f"{t}_points"]) for t in threats}
        evaluate_model(job.config, snakemake.input.weights, snakemake.input.test, outputs, job.device)
