"""Rule distill_student: the teacher distilled into the multi-head student."""

from robustsoup.distill.stages import distill_student
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        distill_student(
            job.config,
            snakemake.input.teacher,
            snakemake.input.student,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
