"""Rule distill_student: the teacher distilled into the multi-head student."""

from robustsoup.distill_stages import distill_student_stage
from robustsoup.job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        distill_student_stage(
            job.config, snakemake.input.teacher, snakemake.input.student,  # noqa: F821
            snakemake.input.train, snakemake.output.weights, job.device,  # noqa: F821
        )
