"""Rule evaluate_ternary: clean, robust and union accuracy over the triangle of three models."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.snakemake_job import snakemake_job
    from robustsoup.soups.stages import evaluate_ternary

    with snakemake_job(snakemake) as job:
        models = dict(snakemake.params.models)
        evaluate_ternary(job.config, models, snakemake.input.test, snakemake.output.metrics, job.device)
