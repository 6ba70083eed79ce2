"""Rule extract_rws: every expert's signature over the first k layers and over all layers (float32)."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import extract_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inp, out = snakemake.input, snakemake.output  # noqa: F821
        for corruption, expert, shallow, everything in zip(snakemake.params.corruptions, inp.experts,  # noqa: F821
                                                           out.shallow, out.all):
            extract_stage(job.config, corruption, inp.init, inp.standard, expert, shallow, everything)
