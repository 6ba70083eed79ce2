"""Rule prepare_data: read the data set once and write its train / adapt / test splits."""

from robustsoup.data.stages import prepare_data
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:
        prepare_data(job.config, dict(snakemake.output.items()))
