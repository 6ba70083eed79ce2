"""Rule pretrain: adversarial training of the parent model."""

from robustsoup.job import snakemake_job
from robustsoup.stages import pretrain_parent

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        pretrain_parent(job.config, snakemake.input.train, snakemake.output.weights, job.device)  # noqa: F821
