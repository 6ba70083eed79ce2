"""Rule evaluate_patched: the standard model patched with each signature of one variant, then unpatched."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import evaluate_patched_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        signatures = dict(zip(job.config["rws"]["corruptions"], snakemake.input.signatures))  # noqa: F821
        evaluate_patched_stage(job.config, snakemake.wildcards.rws_variant, snakemake.input.standard,  # noqa: F821
                               signatures, snakemake.input.test,  # noqa: F821
                               Path(snakemake.input.corrupted[-1]).parent, snakemake.output.rows,  # noqa: F821
                               job.device)
