# Clean accuracy, robust accuracy per norm, and union accuracy of every model
# and soup. One job per model and norm, so that a cluster attacks norms in
# parallel; per-point results are kept so that union accuracy is counted.


rule evaluate_clean:
    input:
        weights=f"{RESULTS}/models/{{model}}.safetensors",
        sidecar=f"{RESULTS}/models/{{model}}.json",
        test=rules.prepare_data.output.test,
    output:
        rows=f"{RESULTS}/metrics/{{model}}/test/clean.tsv",
        points=f"{RESULTS}/metrics/{{model}}/test/clean.points.tsv",
    params:
        seed=config["seed"],
    resources:
        gpu=1,
    threads: 1
    log:
        f"logs/evaluate_clean/{DATASET}/{{model}}.log",
    benchmark:
        f"benchmarks/evaluate_clean/{DATASET}/{{model}}.tsv"
    message:
        "Clean accuracy of {wildcards.model}"
    conda:
        ENV
    script:
        "../scripts/evaluate_clean.py"


rule evaluate_adversarial:
    input:
        weights=f"{RESULTS}/models/{{model}}.safetensors",
        sidecar=f"{RESULTS}/models/{{model}}.json",
        test=rules.prepare_data.output.test,
    output:
        rows=f"{RESULTS}/metrics/{{model}}/test/{{norm}}.tsv",
        points=f"{RESULTS}/metrics/{{model}}/test/{{norm}}.points.tsv",
    params:
        evaluate=settings(config["evaluate"]),
        eps=eps_of,
        seed=config["seed"],
    resources:
        gpu=1,
    threads: 1
    log:
        f"logs/evaluate_adversarial/{DATASET}/{{model}}/{{norm}}.log",
    benchmark:
        f"benchmarks/evaluate_adversarial/{DATASET}/{{model}}/{{norm}}.tsv"
    message:
        "Attacking {wildcards.model} in {wildcards.norm}"
    conda:
        ENV
    script:
        "../scripts/evaluate_adversarial.py"


rule gather_metrics:
    input:
        metric_files(),
        studies=lambda wildcards: list(gathered_studies().values()),
    output:
        all=f"{RESULTS}/metrics/all.tsv",
    params:
        models=ALL_MODELS,
        threats=config["evaluate"]["threats"],
        studies=gathered_studies,
    log:
        f"logs/gather_metrics/{DATASET}.log",
    benchmark:
        f"benchmarks/gather_metrics/{DATASET}.tsv"
    message:
        f"Gathering the metrics of {len(ALL_MODELS)} models"
    conda:
        ENV
    script:
        "../scripts/gather_metrics.py"
