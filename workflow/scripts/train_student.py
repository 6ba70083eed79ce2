"""Rule train_student: the original student, trained normally."""

from robustsoup.distill_stages import train_student_stage
from robustsoup.job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        train_student_stage(job.config, snakemake.input.train, snakemake.output.weights, job.device)  # noqa: F821
