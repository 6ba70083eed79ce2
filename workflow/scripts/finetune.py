"""Rule finetune: fine-tune the parent towards one target threat model."""

from robustsoup.job import snakemake_job
from robustsoup.stages import finetune_from_parent

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        finetune_from_parent(
            job.config, snakemake.wildcards.target, snakemake.input.parent,  # noqa: F821
            snakemake.input.train, snakemake.output.weights, job.device,  # noqa: F821
        )
