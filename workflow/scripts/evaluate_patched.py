"""Rule evaluate_patched: the standard model patched with each signature of one variant, then unpatched."""

from pathlib import Path

from robustsoup.rws.stages import evaluate_patched
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        signatures = dict(zip(job.config["rws"]["corruptions"], snakemake.input.signatures))
        evaluate_patched(
            job.config,
            snakemake.wildcards.rws_variant,
            snakemake.input.standard,
            signatures,
            snakemake.input.test,
            Path(snakemake.input.corrupted[-1]).parent,
            snakemake.output.rows,
            job.device,
        )
