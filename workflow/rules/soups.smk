# Model soups (Croce et al. 2023): affine combinations of the parent and its
# fine-tunes, interpolating and extrapolating.


rule make_soup:
    input:
        ingredients=soup_ingredients,
        train=rules.prepare_data.output.train,
    output:
        weights=f"{RESULTS}/models/{{soup}}.safetensors",
        sidecar=f"{RESULTS}/models/{{soup}}.json",
    params:
        weights=soup_weights,
        batchnorm=settings({k: config["soups"][k] for k in ("batchnorm", "batchnorm_images")}),
        context=training_context(),
    log:
        f"logs/make_soup/{DATASET}/{{soup}}.log",
    benchmark:
        f"benchmarks/make_soup/{DATASET}/{{soup}}.tsv"
    message:
        "Mixing {wildcards.soup}"
    conda:
        ENV
    script:
        "../scripts/make_soup.py"


# --- choosing soups per distribution shift (the soups paper, Sec. 4) -------------------

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
    params:
        search=settings(config["soups"]["search"]),
        shifts=SHIFT_DATA,
        context=training_context(),
    resources:
        gpu=1,
    threads: job_threads()
    priority: 30
    log:
        f"logs/select_soups/{DATASET}.log",
    benchmark:
        f"benchmarks/select_soups/{DATASET}.tsv"
    message:
        "Choosing a soup per shift"
    conda:
        ENV
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
    params:
        ensembles=settings(config["soups"]["ensembles"]),
        shifts=SHIFT_DATA,
    resources:
        gpu=1,
    threads: job_threads()
    priority: 20
    log:
        f"logs/evaluate_soups_shifts/{DATASET}.log",
    benchmark:
        f"benchmarks/evaluate_soups_shifts/{DATASET}.tsv"
    message:
        "Testing base models, ensembles and chosen soups on every shift"
    conda:
        ENV
    script:
        "../scripts/evaluate_soups_shifts.py"


rule evaluate_ternary:
    input:
        models=[model_checkpoint(m) for m in config["soups"]["ternary"]["models"]],
        test=DATA_SPLITS["test"],
    output:
        metrics=f"{RESULTS}/metrics/soups/ternary.tsv",
    params:
        ternary=settings(config["soups"]["ternary"]),
        threats=settings(config["threats"]),
        norms=config["evaluate"]["threats"],
    resources:
        gpu=1,
    threads: job_threads()
    priority: 20
    log:
        f"logs/evaluate_ternary/{DATASET}.log",
    benchmark:
        f"benchmarks/evaluate_ternary/{DATASET}.tsv"
    message:
        "Clean and robust accuracy over the triangle of soups"
    conda:
        ENV
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
            report(path, caption=f"../report/{Path(path).stem}.rst", category="Soups")
            if path.endswith(".png")
            else path
            for path in soups_figures()
        ],
    log:
        f"logs/report_soups/{DATASET}.log",
    benchmark:
        f"benchmarks/report_soups/{DATASET}.tsv"
    message:
        "Writing the soups table and figures"
    conda:
        ENV
    script:
        "../scripts/report_soups.py"
