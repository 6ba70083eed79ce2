"""Rule prepare_data: decode the data set once and write the stratified splits."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.data import prepare_splits

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        split = job.config["data"]
        prepare_splits(
            job.config["dataset"], Path(snakemake.output.train).parent,  # noqa: F821
            n_adapt=split["n_adapt"], n_test=split["n_test"], seed=split["split_seed"],
        )
