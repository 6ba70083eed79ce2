# Tables and figures from the tidy metrics; nothing here recomputes a number.


rule report:
    input:
        metrics=rules.gather_metrics.output.all,
        grid=rules.soup_grid.output.grid,
        sidecars=[f"{RESULTS}/models/{m}.json" for m in BASE_MODELS],
    output:
        tables=report_tables(),
        figures=report_figures(),
        figures_pdf=report_figures((".pdf",)),
    params:
        lines=settings(config["soups"]["lines"]),
    log:
        f"logs/report/{DATASET}.log",
    benchmark:
        f"benchmarks/report/{DATASET}.tsv"
    message:
        "Writing tables and figures"
    conda:
        ENV
    script:
        "../scripts/report.py"
