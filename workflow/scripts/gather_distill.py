"""Rule gather_distill: every distillation model's rows in metrics/distill.tsv."""

from robustsoup.distill_stages import gather_distill
from robustsoup.job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake):  # noqa: F821
        gather_distill(list(snakemake.input), snakemake.output.all)  # noqa: F821
