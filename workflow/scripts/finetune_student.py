"""Rule finetune_student: full fine-tuning of the student with the same augmentation (the baseline)."""

from robustsoup.distill.stages import finetune_student
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        finetune_student(
            job.config,
            snakemake.input.student,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
