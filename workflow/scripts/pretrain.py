"""Rule pretrain: adversarial training of the parent model."""

from robustsoup.lp.stages import pretrain
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        pretrain(job.config, snakemake.input.train, snakemake.output.weights, job.device)
