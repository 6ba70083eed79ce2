"""Rule extract_rws: every expert's signature over the first k layers and over all layers (float32)."""

from robustsoup.rws.stages import extract_rws
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inp, out = snakemake.input, snakemake.output
        extract_rws(job.config, snakemake.params.corruptions, inp.init, inp.standard, inp.experts, out.shallow, out.all)
