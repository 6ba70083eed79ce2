"""Rule train_rws_model: the standard model, the augmentation baseline or a transfer target, from its init."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import train_rws_model

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        train_rws_model(job.config, snakemake.wildcards.rws_model, snakemake.input.init,  # noqa: F821
                        snakemake.input.train, snakemake.output.weights, job.device)  # noqa: F821
