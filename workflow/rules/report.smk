# The benchmark table of the whole run: wall time, fixed cost, memory, precision per rule.


rule summarize_benchmarks:
    input:
        P.study_outputs(),
    output:
        table=report_csv(P.table("benchmarks", ".csv"), "cost", "benchmarks"),
        page=report_page(P.table("benchmarks", ".html"), "cost", "Tables", "benchmarks"),
    log:
        f"logs/summarize_benchmarks/{DATASET}.log",
    conda:
        ENV
    params:
        folder="benchmarks",
        logs="logs",
    message:
        "Summarizing the benchmark files per rule"
    script:
        "../scripts/summarize_benchmarks.py"
