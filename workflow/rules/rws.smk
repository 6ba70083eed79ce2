# Robust Weight Signatures (Cai et al. 2023): robustness to a corruption as a
# small weight patch on a standard model, added, rescaled, composed, removed.
# Included only when rws.enabled (P.rws).
#
#   results/<dataset>/models/rws/{init,standard,augment,expert-<c>}.{safetensors,json}
#   results/<dataset>/models/rws/{init-s<seed>,standard-s<seed>-{own,shared}}.*   transfer targets
#   results/<dataset>/rws/<c>{,-all,-16levels,-8levels,-8bit}.{safetensors,json}  signatures
#   results/<dataset>/metrics/rws/…, metrics/rws.tsv                           tidy rows
#   results/<dataset>/tables/rws_*.{csv,md,html}, figures/rws_*.{png,pdf,html}
#
# Only the `rws` section, the training split, the seed and the model reach
# these rules' rerun params: changing the soups, the threat models or the
# parent reruns none of them.

R = P.rws


rule train_rws_init:
    input:
        train=P.data["train"],
    output:
        weights=R.model("{rws_init}"),
        sidecar=R.model("{rws_init}", ".json"),
    log:
        f"logs/train_rws_init/{RUN}/{{rws_init}}.log",
    benchmark:
        f"benchmarks/train_rws_init/{RUN}/{{rws_init}}.tsv"
    wildcard_constraints:
        rws_init="init(-s[0-9]+)?",
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("rws", "init"),
        nodes=T.nodes("rws", "init"),
    params:
        rerun=P.rerun("train_rws_init"),
    message:
        "Training the RWS initialization {wildcards.rws_init} on clean images"
    script:
        "../scripts/train_rws_init.py"


rule train_rws_model:
    input:
        init=lambda w: R.model(R.finetune_init(w.rws_model)),
        init_sidecar=lambda w: R.model(R.finetune_init(w.rws_model), ".json"),
        train=P.data["train"],
    output:
        weights=R.model("{rws_model}"),
        sidecar=R.model("{rws_model}", ".json"),
    log:
        f"logs/train_rws_model/{RUN}/{{rws_model}}.log",
    benchmark:
        f"benchmarks/train_rws_model/{RUN}/{{rws_model}}.tsv"
    wildcard_constraints:
        rws_model=alternatives(R.finetuned),
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("rws", "finetune"),
        nodes=T.nodes("rws", "finetune"),
    params:
        rerun=lambda w: P.rerun("train_rws_model", w.rws_model),
    message:
        "Fine-tuning the RWS model {wildcards.rws_model}"
    script:
        "../scripts/train_rws_model.py"


rule train_expert:
    input:
        unpack(lambda w: R.expert_validation()),
        init=R.model("init"),
        init_sidecar=R.model("init", ".json"),
        train=P.data["train"],
    output:
        weights=R.model("expert-{rws_corruption}"),
        sidecar=R.model("expert-{rws_corruption}", ".json"),
    log:
        f"logs/train_expert/{RUN}/{{rws_corruption}}.log",
    benchmark:
        f"benchmarks/train_expert/{RUN}/{{rws_corruption}}.tsv"
    wildcard_constraints:
        rws_corruption=alternatives(R.corruptions),
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("rws", "finetune"),
        nodes=T.nodes("rws", "finetune"),
    params:
        rerun=P.rerun("train_expert"),
    message:
        "Fine-tuning the {wildcards.rws_corruption} expert"
    script:
        "../scripts/train_expert.py"


rule extract_rws:
    input:
        init=R.model("init"),
        standard=R.model("standard"),
        experts=list(R.models(R.experts).values()),
        sidecars=list(R.models(["init", "standard", *R.experts], ".json").values()),
    output:
        shallow=list(R.signatures("shallow").values()),
        shallow_sidecars=list(R.signatures("shallow", suffix=".json").values()),
        all=list(R.signatures("all").values()),
        all_sidecars=list(R.signatures("all", suffix=".json").values()),
    log:
        f"logs/extract_rws/{RUN}.log",
    benchmark:
        f"benchmarks/extract_rws/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    params:
        experts=dict(zip(R.corruptions, R.models(R.experts).values())),
        shallow=R.signatures("shallow"),
        all=R.signatures("all"),
        rerun=P.rerun("extract_rws"),
    message:
        f"Extracting the robust weight signatures of {len(R.corruptions)} experts"
    script:
        "../scripts/extract_rws.py"


rule quantize_rws:
    input:
        signatures=list(R.signatures("shallow").values()),
        sidecars=list(R.signatures("shallow", suffix=".json").values()),
    output:
        weights=R.quantized(),
        sidecars=R.quantized(".json"),
    log:
        f"logs/quantize_rws/{RUN}.log",
    benchmark:
        f"benchmarks/quantize_rws/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    params:
        signatures=R.signatures("shallow"),
        quantized=R.quantized_outputs(),
        rerun=P.rerun("quantize_rws"),
    message:
        f"Quantizing the shallow signatures: {', '.join(R.quantized_variants)}"
    script:
        "../scripts/quantize_rws.py"


rule evaluate_rws_model:
    input:
        weights=R.model("{rws_model}"),
        sidecar=R.model("{rws_model}", ".json"),
        test=P.data["test"],
        corrupted=P.corrupted_dir("test"),
    output:
        rows=f"{R.metrics}/models/{{rws_model}}.tsv",
        points=R.points("models", "{rws_model}"),
    log:
        f"logs/evaluate_rws_model/{RUN}/{{rws_model}}.log",
    benchmark:
        f"benchmarks/evaluate_rws_model/{RUN}/{{rws_model}}.tsv"
    wildcard_constraints:
        rws_model=alternatives(R.evaluated),
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        rerun=P.rerun("evaluate_rws_model"),
    message:
        "Clean and corrupted accuracy of {wildcards.rws_model}"
    script:
        "../scripts/evaluate_rws_model.py"


rule evaluate_patched:
    input:
        standard=R.model("standard"),
        standard_sidecar=R.model("standard", ".json"),
        signatures=lambda w: list(R.signatures(w.rws_variant).values()),
        sidecars=lambda w: list(R.signatures(w.rws_variant, suffix=".json").values()),
        test=P.data["test"],
        corrupted=P.corrupted_dir("test"),
    output:
        rows=f"{R.metrics}/patched/{{rws_variant}}.tsv",
        points=R.points("patched", "{rws_variant}"),
    log:
        f"logs/evaluate_patched/{RUN}/{{rws_variant}}.log",
    benchmark:
        f"benchmarks/evaluate_patched/{RUN}/{{rws_variant}}.tsv"
    wildcard_constraints:
        rws_variant=alternatives(R.variants),
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        signatures=lambda w: R.signatures(w.rws_variant),
        rerun=P.rerun("evaluate_patched"),
    message:
        "Standard + RWS ({wildcards.rws_variant}): patch, evaluate, unpatch, check"
    script:
        "../scripts/evaluate_patched.py"


rule rws_lambda_sweep:
    input:
        standard=R.model("standard"),
        standard_sidecar=R.model("standard", ".json"),
        signatures=list(R.signatures(R.deploy).values()),
        test=P.data["test"],
        corrupted=P.corrupted_dir("test"),
    output:
        rows=f"{R.metrics}/lambda.tsv",
    log:
        f"logs/rws_lambda_sweep/{RUN}.log",
    benchmark:
        f"benchmarks/rws_lambda_sweep/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        signatures=R.signatures(R.deploy),
        rerun=P.rerun("rws_lambda_sweep"),
    message:
        "Accuracy against λ of every signature"
    script:
        "../scripts/rws_lambda_sweep.py"


rule rws_compose:
    input:
        standard=R.model("standard"),
        standard_sidecar=R.model("standard", ".json"),
        signatures=list(R.signatures(R.deploy, R.spec["compose"]).values()),
        test=P.data["test"],
        corrupted=P.corrupted_dir("test"),
    output:
        rows=f"{R.metrics}/compose.tsv",
    log:
        f"logs/rws_compose/{RUN}.log",
    benchmark:
        f"benchmarks/rws_compose/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        signatures=R.signatures(R.deploy, R.spec["compose"]),
        rerun=P.rerun("rws_compose"),
    message:
        f"Composing the {R.spec['compose']} signatures"
    script:
        "../scripts/rws_compose.py"


rule rws_oracle_free:
    input:
        standard=R.model("standard"),
        standard_sidecar=R.model("standard", ".json"),
        signatures=list(R.signatures(R.deploy).values()),
        adapt=P.data["adapt"],
        corrupted_adapt=P.corrupted_dir("adapt"),
        test=P.data["test"],
        corrupted=P.corrupted_dir("test"),
    output:
        rows=f"{R.metrics}/oracle_free.tsv",
        detector=f"{R.metrics}/oracle_free_detector.tsv",
        classifier=f"{R.folder}/oracle_free_classifier.safetensors",
    log:
        f"logs/rws_oracle_free/{RUN}.log",
    benchmark:
        f"benchmarks/rws_oracle_free/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        signatures=R.signatures(R.deploy),
        rerun=P.rerun("rws_oracle_free"),
    message:
        "Oracle-free patching: a corruption classifier picks the signature and λ"
    script:
        "../scripts/rws_oracle_free.py"


rule rws_transfer:
    input:
        targets=list(R.models(R.targets).values()),
        target_sidecars=list(R.models(R.targets, ".json").values()),
        signatures=list(R.signatures(R.deploy).values()),
        test=P.data["test"],
        corrupted=P.corrupted_dir("test"),
    output:
        rows=f"{R.metrics}/transfer.tsv",
    log:
        f"logs/rws_transfer/{RUN}.log",
    benchmark:
        f"benchmarks/rws_transfer/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        signatures=R.signatures(R.deploy),
        rerun=P.rerun("rws_transfer"),
    message:
        f"Transferring the signatures to {', '.join(R.targets)}"
    script:
        "../scripts/rws_transfer.py"


rule report_rws:
    input:
        metrics=R.metric_files(),
        detector=rules.rws_oracle_free.output.detector,
        classifier=rules.rws_oracle_free.output.classifier,
        models=list(R.models(R.evaluated).values()),
        signatures=[R.signature(c, v) for v in R.variants for c in R.corruptions],
        sidecars=[R.signature(c, v, ".json") for v in R.variants for c in R.corruptions],
    output:
        all=f"{RESULTS}/metrics/rws.tsv",
        tables=[report_csv(R.table(name, "csv"), "rws", f"rws_{name}") for name in R.TABLES],
        tables_md=[R.table(name, "md") for name in R.TABLES],
        table_pages=[report_page(R.table(name, "html"), "rws", "Tables", f"rws_{name}") for name in R.TABLES],
        figures=list(R.figures().values()),
        figures_pdf=list(R.figures(".pdf").values()),
        figure_pages=[report_page(path, "rws", "Figures", f"rws_{name}") for name, path in R.figures(".html").items()],
    log:
        f"logs/report_rws/{RUN}.log",
    benchmark:
        f"benchmarks/report_rws/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    params:
        models=R.models(R.evaluated),
        signatures={v: R.signatures(v) for v in R.variants},
        tables=R.tables(),
        figures=R.figures(),
        rerun=P.rerun("report_rws"),
    message:
        "Gathering the RWS metrics, writing the RWS tables and figures"
    script:
        "../scripts/report_rws.py"
