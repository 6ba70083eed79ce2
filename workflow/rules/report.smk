# Tables and figures from the tidy metrics; nothing here recomputes a number.


rule report:
    input:
        metrics=rules.gather_metrics.output.all,
        grid=rules.soup_grid.output.grid,
        sidecars=[f"{RESULTS}/models/{m}.json" for m in BASE_MODELS],
    output:
        tables=[
            report(path, caption="../report/accuracy.rst", category="Robust fine-tuning")
            for path in report_tables()
        ],
        figures=[
            report(path, caption="../report/soup_line.rst", category="Soups", subcategory="Lines")
            for path in report_figures()
        ],
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


rule summarize_benchmarks:
    input:
        final_outputs(),
    output:
        table=report(
            f"{RESULTS}/tables/benchmarks.csv", caption="../report/benchmarks.rst", category="Benchmarks"
        ),
    params:
        folder="benchmarks",
    log:
        f"logs/summarize_benchmarks/{DATASET}.log",
    message:
        "Summarizing the benchmark files per rule"
    conda:
        ENV
    script:
        "../scripts/summarize_benchmarks.py"
