"""Rule quantize_rws: every shallow signature quantized to each configured bit width."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import quantize_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        bits = snakemake.params.bits  # noqa: F821
        weights = iter(snakemake.output.weights)  # noqa: F821  (corruption-major, then bits)
        for signature in snakemake.input.signatures:  # noqa: F821
            quantize_stage(job.config, signature, {b: next(weights) for b in bits})
