"""Rule train_rws_model: the standard model, the augmentation baseline or a transfer target, from its init."""

from robustsoup.rws.stages import train_rws_model
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        train_rws_model(
            job.config,
            snakemake.wildcards.rws_model,
            snakemake.input.init,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
        )
