"""Rule corrupt_split: corrupted copies of one split in Hendrycks' layout."""

from pathlib import Path

from robustsoup.data import load_split
from robustsoup.data.corruptions import write_corrupted_split
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake):
        split = load_split(snakemake.input.split)
        params = snakemake.params
        write_corrupted_split(
            split.images,
            split.labels,
            Path(snakemake.output.labels).parent,
            corruptions=params.corruptions,
            severities=params.severities,
            seed=params.seed,
        )
