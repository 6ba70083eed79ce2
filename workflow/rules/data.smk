# Decode the data set once and split it; every later job reads these uint8 tensors.


rule prepare_data:
    output:
        train=f"{RESULTS}/data/train.safetensors",
        adapt=f"{RESULTS}/data/adapt.safetensors",
        test=f"{RESULTS}/data/test.safetensors",
    params:
        dataset=config["dataset"],
        split=settings(config["data"]),
    log:
        f"logs/prepare_data/{DATASET}.log",
    benchmark:
        f"benchmarks/prepare_data/{DATASET}.tsv"
    message:
        "Decoding and splitting {params.dataset}"
    conda:
        ENV
    script:
        "../scripts/prepare_data.py"
