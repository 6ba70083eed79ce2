# The benchmark table of the whole run: wall time, fixed cost, memory, precision per rule.


rule summarize_benchmarks:
    input:
        P.study_outputs(),
    output:
        table=report_csv(P.table("benchmarks", ".csv", True), "cost", "benchmarks"),
        page=report_page(P.table("benchmarks", ".html", True), "cost", "Tables", "benchmarks"),
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


# The whole run over its seeds (robustsoup.seeds): every seed's rows in one ledger (a seed column), and
# every seed's table as mean ± sd under results/<dataset>/tables/.
rule report_seeds:
    input:
        P.over_seeds.input_files(),
    output:
        ledger=P.over_seeds.ledger(),
        tables=P.over_seeds.table_files(),
    log:
        f"logs/report_seeds/{DATASET}.log",
    conda:
        ENV
    params:
        ledgers=P.over_seeds.ledgers(),
        tables=P.over_seeds.inputs(),
        outputs=P.over_seeds.tables(),
    message:
        f"Every table over the seeds {P.seeds} (mean ± sd)"
    script:
        "../scripts/report_seeds.py"


# The papers' claims as verdicts: every seed's rows of metrics/all.tsv and their per-point files.
rule report_findings:
    input:
        P.over_seeds.findings_inputs(),
    output:
        table_csv=report_csv(P.table("findings", ".csv", True), "findings", "findings"),
        table_md=P.table("findings", ".md", True),
        table_page=report_page(P.table("findings", ".html", True), "findings", "Tables", "findings"),
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
