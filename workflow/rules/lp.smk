# Robust fine-tuning (Croce & Hein 2022) and its soup lines: adversarially train
# the parent once, fine-tune it briefly towards each target threat model, mix
# soups along lines between them (Croce et al. 2023), evaluate every model clean
# and under attack, and write the accuracy table and the line figures.
#
# Scheduling: every job that computes takes the config's `threads` (auto: a
# quarter of --cores, at least 1), and the chain parent → fine-tunes → soup
# selection has the highest priorities, so the long critical path starts first.


rule pretrain:
    input:
        train=rules.prepare_data.output.train,
    output:
        weights=f"{RESULTS}/models/{PARENT}.safetensors",
        sidecar=f"{RESULTS}/models/{PARENT}.json",
    log:
        f"logs/pretrain/{DATASET}/{PARENT}.log",
    benchmark:
        f"benchmarks/pretrain/{DATASET}/{PARENT}.tsv"
    priority: 50
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        training=settings(config["pretrain"]),
        context=training_context(),
    message:
        "Adversarial training of the parent {PARENT}"
    script:
        "../scripts/pretrain.py"


rule finetune:
    input:
        parent=rules.pretrain.output.weights,
        parent_sidecar=rules.pretrain.output.sidecar,
        train=rules.prepare_data.output.train,
    output:
        weights=f"{RESULTS}/models/{PARENT}-{{target}}.safetensors",
        sidecar=f"{RESULTS}/models/{PARENT}-{{target}}.json",
    log:
        f"logs/finetune/{DATASET}/{PARENT}-{{target}}.log",
    benchmark:
        f"benchmarks/finetune/{DATASET}/{PARENT}-{{target}}.tsv"
    priority: 40
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        training=finetune_settings,
        context=training_context(),
    message:
        "Fine-tuning {PARENT} towards {wildcards.target}"
    script:
        "../scripts/finetune.py"


rule make_soup:
    input:
        ingredients=soup_ingredients,
        train=rules.prepare_data.output.train,
    output:
        weights=f"{RESULTS}/models/{{soup}}.safetensors",
        sidecar=f"{RESULTS}/models/{{soup}}.json",
    log:
        f"logs/make_soup/{DATASET}/{{soup}}.log",
    benchmark:
        f"benchmarks/make_soup/{DATASET}/{{soup}}.tsv"
    conda:
        ENV
    params:
        weights=soup_weights,
        batchnorm=settings({k: config["soups"][k] for k in ("batchnorm", "batchnorm_images")}),
        context=training_context(),
    message:
        "Mixing {wildcards.soup}"
    script:
        "../scripts/make_soup.py"


rule evaluate_model:
    input:
        weights=f"{RESULTS}/models/{{model}}.safetensors",
        sidecar=f"{RESULTS}/models/{{model}}.json",
        test=rules.prepare_data.output.test,
    output:
        **evaluation_outputs("{model}"),
    log:
        f"logs/evaluate_model/{DATASET}/{{model}}.log",
    benchmark:
        f"benchmarks/evaluate_model/{DATASET}/{{model}}.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        evaluate=settings(config["evaluate"]),
        threats=settings(config["threats"]),
        seed=config["seed"],
    message:
        "Clean and robust accuracy of {wildcards.model}"
    script:
        "../scripts/evaluate_model.py"


rule report_lp:
    input:
        metrics=metric_files(),
        studies=lambda wildcards: list(gathered_studies().values()),
        sidecars=[f"{RESULTS}/models/{m}.json" for m in BASE_MODELS],
    output:
        all=f"{RESULTS}/metrics/all.tsv",
        grid=f"{RESULTS}/soups/grid.tsv",
        tables=[
            report(path, caption="../report/accuracy.rst", category="Robust fine-tuning") for path in report_tables()
        ],
        figures=[
            report(path, caption="../report/soup_line.rst", category="Soups", subcategory="Lines")
            for path in report_figures()
        ],
        figures_pdf=report_figures((".pdf",)),
    log:
        f"logs/report_lp/{DATASET}.log",
    benchmark:
        f"benchmarks/report_lp/{DATASET}.tsv"
    conda:
        ENV
    params:
        soups=settings({k: config["soups"][k] for k in ("lines", "weights")}),
        models=ALL_MODELS,
        studies=gathered_studies,
    message:
        f"Gathering the metrics of {len(ALL_MODELS)} models and every study, writing tables and figures"
    script:
        "../scripts/report_lp.py"
