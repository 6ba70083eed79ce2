"""Rule gather_metrics: concatenate every model's metric rows into metrics/all.tsv."""

from robustsoup.job import snakemake_job
from robustsoup.stages import gather_metrics

if __name__ == "__main__":
    with snakemake_job(snakemake):  # noqa: F821
        gather_metrics(list(snakemake.input), snakemake.output.all)  # noqa: F821
