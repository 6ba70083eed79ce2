"""Rule finetune: fine-tune the parent towards one target threat model."""

from robustsoup.lp.stages import finetune
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        finetune(
            job.config,
            snakemake.wildcards.target,
            snakemake.input.parent,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
