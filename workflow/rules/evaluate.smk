# Clean accuracy, robust accuracy per norm, and union accuracy of every model
# and soup. One job per model attacks every norm (the model and split load
# once, and the job's fixed cost is paid once); per-point results are kept
# per threat so that union accuracy is counted.


rule evaluate_model:
    input:
        weights=f"{RESULTS}/models/{{model}}.safetensors",
        sidecar=f"{RESULTS}/models/{{model}}.json",
        test=rules.prepare_data.output.test,
    output:
        **evaluation_outputs("{model}"),
    params:
        evaluate=settings(config["evaluate"]),
        threats=settings(config["threats"]),
        seed=config["seed"],
    resources:
        gpu=1,
    threads: job_threads()
    log:
        f"logs/evaluate_model/{DATASET}/{{model}}.log",
    benchmark:
        f"benchmarks/evaluate_model/{DATASET}/{{model}}.tsv"
    message:
        "Clean and robust accuracy of {wildcards.model}"
    conda:
        ENV
    script:
        "../scripts/evaluate_model.py"
