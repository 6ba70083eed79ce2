# The benchmark table of the whole run: wall time, fixed cost, memory, precision per rule.


rule summarize_benchmarks:
    input:
        final_outputs(),
    output:
        table=report(f"{RESULTS}/tables/benchmarks.csv", caption="../report/benchmarks.rst", category="Benchmarks"),
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
