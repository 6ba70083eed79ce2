# Clean, per-norm robust and union accuracy of every model and soup.


rule evaluate:
    input:
        weights=f"{RESULTS}/models/{{model}}.safetensors",
        sidecar=f"{RESULTS}/models/{{model}}.json",
        test=rules.prepare_data.output.test,
    output:
        metrics=f"{RESULTS}/metrics/{{model}}/test.tsv",
    params:
        evaluate=settings(config["evaluate"]),
        threats=settings(config["threats"]),
        seed=config["seed"],
    resources:
        gpu=1,
    threads: 1
    log:
        f"logs/evaluate/{DATASET}/{{model}}.log",
    benchmark:
        f"benchmarks/evaluate/{DATASET}/{{model}}.tsv"
    message:
        "Evaluating {wildcards.model} (clean and adversarial)"
    conda:
        ENV
    script:
        "../scripts/evaluate.py"


rule gather_metrics:
    input:
        metric_files(),
    output:
        all=f"{RESULTS}/metrics/all.tsv",
    log:
        f"logs/gather_metrics/{DATASET}.log",
    benchmark:
        f"benchmarks/gather_metrics/{DATASET}.tsv"
    message:
        f"Gathering {len(ALL_MODELS)} metric files"
    conda:
        ENV
    script:
        "../scripts/gather_metrics.py"
