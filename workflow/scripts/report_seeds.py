"""Rule report_seeds: every seed's rows in one ledger, and every seed's table as mean ± sd over the seeds."""

from robustsoup.report.seeds import report_seeds
from robustsoup.snakemake_job import snakemake_job

if __name__ == "__main__":
    with snakemake_job(snakemake):
        params = snakemake.params
        report_seeds(params.ledgers, snakemake.output.ledger, params.tables, params.outputs)
