"""Rule gather_metrics: every metric file, with union accuracy and a study column, into metrics/all.tsv."""

from pathlib import Path

from robustsoup.job import snakemake_job
from robustsoup.stages import gather_metrics

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        out = Path(snakemake.output.all)  # noqa: F821
        params = snakemake.params  # noqa: F821
        gather_metrics(job.config, params.models, out.parent, out, studies=params.studies)
