"""Rule report_rws: metrics/rws.tsv, Tables 1 and 4, the oracle-free and transfer tables, and the RWS figures."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.rws.stages import report_rws
    from robustsoup.snakemake_job import snakemake_job

    with snakemake_job(snakemake) as job:
        inp, params = snakemake.input, snakemake.params
        report_rws(
            job.config,
            list(inp.metrics),
            snakemake.output.all,
            inp.detector,
            params.models,
            params.signatures,
            inp.classifier,
            params.tables,
            params.figures,
        )
