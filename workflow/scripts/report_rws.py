"""Rule report_rws: metrics/rws.tsv, Tables 1 and 4, the oracle-free and transfer tables, and the RWS figures."""

from robustsoup.job import snakemake_job
from robustsoup.rws_stages import report_stage

if __name__ == "__main__":
    with snakemake_job(snakemake) as job:  # noqa: F821
        inp, params = snakemake.input, snakemake.params  # noqa: F821
        report_stage(job.config, list(inp.metrics), snakemake.output.all, inp.detector,  # noqa: F821
                     params.models, params.signatures, inp.classifier,
                     params.tables, params.figures)
