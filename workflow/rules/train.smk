# Robust fine-tuning (Croce & Hein 2022): adversarially train the parent once,
# then fine-tune it briefly towards each target threat model.
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
    params:
        training=settings(config["pretrain"]),
        context=training_context(),
    resources:
        gpu=1,
    threads: job_threads()
    priority: 50
    log:
        f"logs/pretrain/{DATASET}/{PARENT}.log",
    benchmark:
        f"benchmarks/pretrain/{DATASET}/{PARENT}.tsv"
    message:
        "Adversarial training of the parent {PARENT}"
    conda:
        ENV
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
    params:
        training=finetune_settings,
        context=training_context(),
    resources:
        gpu=1,
    threads: job_threads()
    priority: 40
    log:
        f"logs/finetune/{DATASET}/{PARENT}-{{target}}.log",
    benchmark:
        f"benchmarks/finetune/{DATASET}/{PARENT}-{{target}}.tsv"
    message:
        "Fine-tuning {PARENT} towards {wildcards.target}"
    conda:
        ENV
    script:
        "../scripts/finetune.py"
