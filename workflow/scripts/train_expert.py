"""Rule train_expert: one corruption expert, fine-tuned from the shared init on that corruption."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import train_rws_model

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        train_rws_model(job.config, f"expert-{snakemake.wildcards.rws_corruption}",  # noqa: F821
                        snakemake.input.init, snakemake.input.train, snakemake.output.weights,  # noqa: F821
                        job.device)
