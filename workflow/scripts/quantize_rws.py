"""Rule quantize_rws: the shallow signatures quantized together as every configured variant (levels, bits)."""

from robustsoup.rws.stages import quantize_rws
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        params = snakemake.params
        quantize_rws(job.config, dict(params.signatures), {v: dict(p) for v, p in params.quantized.items()})
