"""Rule train_student: the original student, trained normally."""

from robustsoup.distill.stages import train_student
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        train_student(job.config, snakemake.input.train, snakemake.output.weights, job.device)
