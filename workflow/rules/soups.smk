# Soups per distribution shift (Croce et al. 2023, Sec. 4): a soup of the four
# base models chosen per shift on a few labelled images, tested held out,
# against the base models and output ensembles; the L∞/L2/L1 triangle.

BASE_CHECKPOINTS = [model_checkpoint(m) for m in BASE_MODELS]
SHIFT_DATA = settings({k: config["data"][k] for k in ("corruptions", "severities")})


rule select_soups:
    input:
        models=BASE_CHECKPOINTS,
        adapt=DATA_SPLITS["adapt"],
        corrupted=corrupted_dir_or_none("adapt"),
    output:
        scores=f"{RESULTS}/soups/scores.tsv",
        selection=f"{RESULTS}/soups/selection.tsv",
    log:
        f"logs/select_soups/{DATASET}.log",
    benchmark:
        f"benchmarks/select_soups/{DATASET}.tsv"
    priority: 30
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        search=settings(config["soups"]["search"]),
        shifts=SHIFT_DATA,
        context=training_context(),
    message:
        "Choosing a soup per shift"
    script:
        "../scripts/select_soups.py"


rule evaluate_soups_shifts:
    input:
        models=BASE_CHECKPOINTS,
        test=DATA_SPLITS["test"],
        corrupted=corrupted_dir_or_none("test"),
        selection=rules.select_soups.output.selection,
    output:
        metrics=f"{RESULTS}/metrics/soups/shifts.tsv",
        models=f"{RESULTS}/soups/models.tsv",
    log:
        f"logs/evaluate_soups_shifts/{DATASET}.log",
    benchmark:
        f"benchmarks/evaluate_soups_shifts/{DATASET}.tsv"
    priority: 20
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        ensembles=settings(config["soups"]["ensembles"]),
        shifts=SHIFT_DATA,
    message:
        "Testing base models, ensembles and chosen soups on every shift"
    script:
        "../scripts/evaluate_soups_shifts.py"


rule evaluate_ternary:
    input:
        models=[model_checkpoint(m) for m in config["soups"]["ternary"]["models"]],
        test=DATA_SPLITS["test"],
    output:
        metrics=f"{RESULTS}/metrics/soups/ternary.tsv",
    log:
        f"logs/evaluate_ternary/{DATASET}.log",
    benchmark:
        f"benchmarks/evaluate_ternary/{DATASET}.tsv"
    priority: 20
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        ternary=settings(config["soups"]["ternary"]),
        threats=settings(config["threats"]),
        norms=config["evaluate"]["threats"],
    message:
        "Clean and robust accuracy over the triangle of soups"
    script:
        "../scripts/evaluate_ternary.py"


rule report_soups:
    input:
        shifts=rules.evaluate_soups_shifts.output.metrics,
        models=rules.evaluate_soups_shifts.output.models,
        selection=rules.select_soups.output.selection,
        ternary=ternary_metrics(),
    output:
        tables=[
            report(f"{RESULTS}/tables/soups_shifts.csv", caption="../report/soups_shifts.rst", category="Soups"),
            f"{RESULTS}/tables/soups_shifts.md",
        ],
        figures=[
            (
                report(path, caption=f"../report/{Path(path).stem}.rst", category="Soups")
                if path.endswith(".png")
                else path
            )
            for path in soups_figures()
        ],
    log:
        f"logs/report_soups/{DATASET}.log",
    benchmark:
        f"benchmarks/report_soups/{DATASET}.tsv"
    conda:
        ENV
    message:
        "Writing the soups table and figures"
    script:
        "../scripts/report_soups.py"
