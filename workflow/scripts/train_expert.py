"""Rule train_expert: one corruption expert, fine-tuned from the shared init on that corruption."""

from robustsoup.rws.stages import train_expert
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        train_expert(
            job.config,
            snakemake.wildcards.rws_corruption,
            snakemake.input.init,
            snakemake.input.train,
            snakemake.output.weights,
            job.device,
            adapt_path=snakemake.input.get("adapt"),
            validation_dir=snakemake.input.get("validation"),
        )
