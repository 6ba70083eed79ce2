"""Rule corrupt_split: corrupted copies of one split in Hendrycks' layout."""

from robustsoup.data.stages import corrupt_split
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        corrupt_split(job.config, snakemake.input.split, snakemake.output.corrupted)
