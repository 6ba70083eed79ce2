"""Rule quantize_rws: the shallow signatures quantized together as every configured variant (levels, bits)."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import quantize_rws
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        params = snakemake.params
        quantize_rws(job.config, dict(params.signatures), {v: dict(p) for v, p in params.quantized.items()})
