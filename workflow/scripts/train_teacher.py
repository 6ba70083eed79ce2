"""Rule train_teacher: the small teacher, made robust with the distillation's augmentation."""

from robustsoup.distill.stages import train_teacher
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        train_teacher(job.config, snakemake.input.train, snakemake.output.weights, job.device)
