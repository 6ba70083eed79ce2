"""Rule prepare_data: read the data set once and write its train / adapt / test splits."""

from pathlib import Path

from robustsoup.data import prepare_splits
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        data = job.config["data"]
        prepare_splits(
            job.config["dataset"],
            Path(snakemake.output.train).parent,
            n_adapt=data["n_adapt"],
            n_test=data["n_test"],
            seed=data["split_seed"],
            root=data["root"],
            k_adapt_per_class=data["k_adapt_per_class"],
            cache_max_images=data["cache_max_images"],
        )
