"""Rule gather_metrics: every model's metric rows plus union accuracy into metrics/all.tsv."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.stages import gather_metrics

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        out = Path(snakemake.output.all)  # noqa: F821
        gather_metrics(job.config, snakemake.params.models, out.parent, out)  # noqa: F821
