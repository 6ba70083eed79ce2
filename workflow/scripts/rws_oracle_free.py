"""Rule rws_oracle_free: a corruption classifier on shallow features picks the signature and λ per batch."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import oracle_free_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inp, out = snakemake.input, snakemake.output  # noqa: F821
        signatures = dict(zip(job.config["rws"]["corruptions"], inp.signatures))
        oracle_free_stage(job.config, inp.standard, signatures, inp.adapt, Path(inp.corrupted_adapt[-1]).parent,
                          inp.test, Path(inp.corrupted[-1]).parent, out.rows, out.detector, out.classifier,
                          job.device)
