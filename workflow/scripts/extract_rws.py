"""Rule extract_rws: every expert's signature over the first k layers and over all layers (float32)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import extract_rws
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        inp, params = snakemake.input, snakemake.params
        experts = dict(params.experts)  # corruption → expert checkpoint
        extract_rws(
            job.config,
            list(experts),
            inp.init,
            inp.standard,
            list(experts.values()),
            [params.shallow[c] for c in experts],
            [params.all[c] for c in experts],
        )
