"""Rule train_teacher: the small teacher, made robust with the distillation's augmentation."""

from robustsoup.distill_stages import train_teacher_stage
from robustsoup.job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        train_teacher_stage(job.config, snakemake.input.train, snakemake.output.weights, job.device)  # noqa: F821
