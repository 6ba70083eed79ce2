"""Rule rws_oracle_free: a corruption classifier on shallow features picks the signature and λ per batch."""

from pathlib import Path

from robustsoup.rws.stages import rws_oracle_free
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        inp, out = snakemake.input, snakemake.output
        signatures = dict(zip(job.config["rws"]["corruptions"], inp.signatures))
        rws_oracle_free(
            job.config,
            inp.standard,
            signatures,
            inp.adapt,
            Path(inp.corrupted_adapt[-1]).parent,
            inp.test,
            Path(inp.corrupted[-1]).parent,
            out.rows,
            out.detector,
            out.classifier,
            job.device,
        )
