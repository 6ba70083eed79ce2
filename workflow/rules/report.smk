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


# The papers' claims as verdicts: every study's rows of metrics/all.tsv and their per-point files.
rule report_findings:
    input:
        all=f"{RESULTS}/metrics/all.tsv",
        points=P.findings_inputs(),
    output:
        table_csv=report_csv(P.table("findings", ".csv"), "findings", "findings"),
        table_md=P.table("findings"),
        table_page=report_page(P.table("findings", ".html"), "findings", "Tables", "findings"),
    log:
        f"logs/report_findings/{DATASET}.log",
    benchmark:
        f"benchmarks/report_findings/{DATASET}.tsv"
    conda:
        ENV
    message:
        "Checking the papers' findings F1–F5 on this run"
    script:
        "../scripts/report_findings.py"
