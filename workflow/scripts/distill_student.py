"""Rule distill_student: the teacher distilled into the multi-head student."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.distill.stages import distill_student
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        distill_student(
            job.config,
            snakemake.input.teacher,
            snakemake.input.student,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
