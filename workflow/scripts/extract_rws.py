"""Rule extract_rws: every expert's signature over the first k layers and over all layers (float32)."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import extract_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inp, out = snakemake.input, snakemake.output  # noqa: F821
        extract_stage(job.config, snakemake.params.corruptions, inp.init, inp.standard, inp.experts,  # noqa: F821
                      out.shallow, out.all)
