"""Rule pretrain_reference: a from-scratch reference model for one target norm, with the parent's budget."""

from robustsoup.lp.stages import pretrain_reference
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        pretrain_reference(
            job.config, snakemake.wildcards.reference, snakemake.input.train, snakemake.output.weights, job.device
        )
