"""Rule gather_rws: every RWS metric file in one tidy table (metrics/rws.tsv)."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import gather_stage

if __name__ == "__main__":
    with snakemake_job(snakemake):  # noqa: F821
        gather_stage(list(snakemake.input), snakemake.output.all)  # noqa: F821
