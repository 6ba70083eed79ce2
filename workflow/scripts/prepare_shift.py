"""Rule prepare_shift: the adapt / test split of every part of one shifted data set."""

from robustsoup.data.stages import prepare_shift
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        prepare_shift(job.config, snakemake.wildcards.shift, snakemake.output.splits)
