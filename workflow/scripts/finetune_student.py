"""Rule finetune_student: full fine-tuning of the student with the same augmentation (the baseline)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.distill.stages import finetune_student
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        finetune_student(
            job.config,
            snakemake.input.student,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
