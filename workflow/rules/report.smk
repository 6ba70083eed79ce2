# Tables and figures from the tidy metrics; nothing here recomputes a number.


rule report:
    input:
        metrics=metric_files(),
        studies=lambda wildcards: list(gathered_studies().values()),
        sidecars=[f"{RESULTS}/models/{m}.json" for m in BASE_MODELS],
    output:
        all=f"{RESULTS}/metrics/all.tsv",
        grid=f"{RESULTS}/soups/grid.tsv",
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
        soups=settings({k: config["soups"][k] for k in ("lines", "weights")}),
        models=ALL_MODELS,
        studies=gathered_studies,
    log:
        f"logs/report/{DATASET}.log",
    benchmark:
        f"benchmarks/report/{DATASET}.tsv"
    message:
        f"Gathering the metrics of {len(ALL_MODELS)} models and every study, writing tables and figures"
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
        logs="logs",
    log:
        f"logs/summarize_benchmarks/{DATASET}.log",
    message:
        "Summarizing the benchmark files per rule"
    conda:
        ENV
    script:
        "../scripts/summarize_benchmarks.py"
