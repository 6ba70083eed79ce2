"""Rule finetune_student: full fine-tuning of the student with the same augmentation (the baseline)."""

from robustsoup.distill_stages import finetune_student_stage
from robustsoup.job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        finetune_student_stage(
            job.config, snakemake.input.student, snakemake.input.train,  # noqa: F821
            snakemake.output.weights, job.device,  # noqa: F821
        )
