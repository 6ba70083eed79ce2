# Model soups (Croce et al. 2023): affine combinations of the parent and its
# fine-tunes, interpolating and extrapolating.


rule soup_grid:
    output:
        grid=f"{RESULTS}/soups/grid.tsv",
    params:
        soups=settings(config["soups"]),
        base_models=BASE_MODELS,
    log:
        f"logs/soup_grid/{DATASET}.log",
    benchmark:
        f"benchmarks/soup_grid/{DATASET}.tsv"
    message:
        f"Writing the soup grid ({len(SOUPS)} soups)"
    conda:
        ENV
    script:
        "../scripts/soup_grid.py"


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
