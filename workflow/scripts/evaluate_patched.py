"""Rule evaluate_patched: the standard model patched with each signature of one variant, then unpatched."""

from robustsoup.rws.stages import evaluate_patched
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        evaluate_patched(
            job.config,
            snakemake.wildcards.rws_variant,
            snakemake.input.standard,
            dict(snakemake.params.signatures),
            snakemake.input.test,
            snakemake.input.corrupted,
            snakemake.output.rows,
            job.device,
            points_path=snakemake.output.points,
        )
