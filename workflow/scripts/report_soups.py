"""Rule report_soups: the soups paper's table, the composition and ternary figures, soups/grid.tsv and the
soup-line figures."""

from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__real_file__)  # the run's job server runs the job when there is one (robustsoup.job_server)
    from robustsoup.snakemake_job import snakemake_job
    from robustsoup.soups.stages import report_soups

    with snakemake_job(snakemake) as job:
        inputs, out, params = snakemake.input, snakemake.output, snakemake.params
        report_soups(
            job.config,
            inputs.shifts,
            inputs.models,
            inputs.selection,
            inputs.get("ternary"),
            inputs.ledger,
            out.table_md,
            params.figures["soup_composition"],
            params.figures.get("soup_ternary"),
            out.grid,
            list(out.line_figures),
        )
