"""Rule quantize_rws: every shallow signature quantized to each configured bit width."""

from robustsoup.rws.stages import quantize_rws
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        bits = snakemake.params.bits
        weights = iter(snakemake.output.weights)
        for signature in snakemake.input.signatures:
            quantize_rws(job.config, signature, {b: next(weights) for b in bits})
