# Robust Weight Signatures (Cai et al. 2023): robustness to a corruption as a
# small weight patch on a standard model, added, rescaled, composed, removed.
#
#   results/<dataset>/models/rws/{init,standard,augment,expert-<c>}.{safetensors,json}
#   results/<dataset>/models/rws/{init-s<seed>,standard-s<seed>-{own,shared}}.*   transfer targets
#   results/<dataset>/rws/<c>{,-all,-16bit,-8bit}.{safetensors,json}             signatures
#   results/<dataset>/metrics/rws/…, metrics/rws.tsv                           tidy rows
#   results/<dataset>/tables/rws_*.{csv,md}, figures/rws_*.{png,pdf}
#
# Only the `rws` section, the training split, the seed and the model reach
# these rules' params: changing the soups, the threat models or the parent
# reruns none of them.


include: "rws_common.smk"


rule train_rws_init:
    input:
        train=DATA_SPLITS["train"],
    output:
        weights=rws_model("{rws_init}"),
        sidecar=rws_model("{rws_init}", ".json"),
    log:
        f"logs/train_rws_init/{DATASET}/{{rws_init}}.log",
    benchmark:
        f"benchmarks/train_rws_init/{DATASET}/{{rws_init}}.tsv"
    wildcard_constraints:
        rws_init="init(-s[0-9]+)?",
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        training=settings(RWS["init"]),
        context=RWS_CONTEXT,
    message:
        "Training the RWS initialization {wildcards.rws_init} on clean images"
    script:
        "../scripts/train_rws_init.py"


rule train_rws_model:
    input:
        unpack(rws_finetune_input),
    output:
        weights=rws_model("{rws_model}"),
        sidecar=rws_model("{rws_model}", ".json"),
    log:
        f"logs/train_rws_model/{DATASET}/{{rws_model}}.log",
    benchmark:
        f"benchmarks/train_rws_model/{DATASET}/{{rws_model}}.tsv"
    wildcard_constraints:
        rws_model=_alternatives(RWS_FINETUNED),
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        training=settings(RWS["finetune"]),
        policy=rws_finetune_settings,
        context=RWS_CONTEXT,
    message:
        "Fine-tuning the RWS model {wildcards.rws_model}"
    script:
        "../scripts/train_rws_model.py"


rule train_expert:
    input:
        init=rws_model("init"),
        init_sidecar=rws_model("init", ".json"),
        train=DATA_SPLITS["train"],
    output:
        weights=rws_model("expert-{rws_corruption}"),
        sidecar=rws_model("expert-{rws_corruption}", ".json"),
    log:
        f"logs/train_expert/{DATASET}/{{rws_corruption}}.log",
    benchmark:
        f"benchmarks/train_expert/{DATASET}/{{rws_corruption}}.tsv"
    wildcard_constraints:
        rws_corruption=_alternatives(RWS_CORRUPTIONS),
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        training=settings(RWS["finetune"]),
        severities=RWS["severities"],
        context=RWS_CONTEXT,
    message:
        "Fine-tuning the {wildcards.rws_corruption} expert"
    script:
        "../scripts/train_expert.py"


rule extract_rws:
    input:
        init=rws_model("init"),
        standard=rws_model("standard"),
        experts=[rws_model(f"expert-{c}") for c in RWS_CORRUPTIONS],
        sidecars=[rws_model(m, ".json") for m in ["init", "standard", *[f"expert-{c}" for c in RWS_CORRUPTIONS]]],
    output:
        shallow=list(rws_signatures("shallow").values()),
        shallow_sidecars=[rws_signature(c, "shallow", ".json") for c in RWS_CORRUPTIONS],
        all=list(rws_signatures("all").values()),
        all_sidecars=[rws_signature(c, "all", ".json") for c in RWS_CORRUPTIONS],
    log:
        f"logs/extract_rws/{DATASET}.log",
    benchmark:
        f"benchmarks/extract_rws/{DATASET}.tsv"
    conda:
        ENV
    params:
        layers=settings({k: RWS[k] for k in ("layers", "norm_affine", "statistics")}),
        corruptions=RWS_CORRUPTIONS,
    message:
        f"Extracting the robust weight signatures of {len(RWS_CORRUPTIONS)} experts"
    script:
        "../scripts/extract_rws.py"


rule quantize_rws:
    input:
        signatures=list(rws_signatures("shallow").values()),
        sidecars=[rws_signature(c, "shallow", ".json") for c in RWS_CORRUPTIONS],
    output:
        weights=[rws_signature(c, f"{b}bit") for c in RWS_CORRUPTIONS for b in RWS["bits"]],
        sidecars=[rws_signature(c, f"{b}bit", ".json") for c in RWS_CORRUPTIONS for b in RWS["bits"]],
    log:
        f"logs/quantize_rws/{DATASET}.log",
    benchmark:
        f"benchmarks/quantize_rws/{DATASET}.tsv"
    conda:
        ENV
    params:
        bits=RWS["bits"],
        corruptions=RWS_CORRUPTIONS,
    message:
        f"Quantizing the shallow signatures to {RWS['bits']} bits"
    script:
        "../scripts/quantize_rws.py"


rule evaluate_rws_model:
    input:
        weights=rws_model("{rws_model}"),
        sidecar=rws_model("{rws_model}", ".json"),
        test=DATA_SPLITS["test"],
        corrupted=rws_corrupted("test"),
    output:
        rows=f"{RWS_METRICS}/models/{{rws_model}}.tsv",
    log:
        f"logs/evaluate_rws_model/{DATASET}/{{rws_model}}.log",
    benchmark:
        f"benchmarks/evaluate_rws_model/{DATASET}/{{rws_model}}.tsv"
    wildcard_constraints:
        rws_model=_alternatives(RWS_EVALUATED),
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        evaluate=settings({k: RWS[k] for k in ("corruptions", "eval_severities")}),
    message:
        "Clean and corrupted accuracy of {wildcards.rws_model}"
    script:
        "../scripts/evaluate_rws_model.py"


rule evaluate_patched:
    input:
        standard=rws_model("standard"),
        standard_sidecar=rws_model("standard", ".json"),
        signatures=lambda w: [rws_signature(c, w.rws_variant) for c in RWS_CORRUPTIONS],
        sidecars=lambda w: [rws_signature(c, w.rws_variant, ".json") for c in RWS_CORRUPTIONS],
        test=DATA_SPLITS["test"],
        corrupted=rws_corrupted("test"),
    output:
        rows=f"{RWS_METRICS}/patched/{{rws_variant}}.tsv",
    log:
        f"logs/evaluate_patched/{DATASET}/{{rws_variant}}.log",
    benchmark:
        f"benchmarks/evaluate_patched/{DATASET}/{{rws_variant}}.tsv"
    wildcard_constraints:
        rws_variant=_alternatives(RWS_VARIANTS),
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        evaluate=settings({k: RWS[k] for k in ("corruptions", "eval_severities", "lambda")}),
    message:
        "Standard + RWS ({wildcards.rws_variant}): patch, evaluate, unpatch, check"
    script:
        "../scripts/evaluate_patched.py"


rule rws_lambda_sweep:
    input:
        standard=rws_model("standard"),
        standard_sidecar=rws_model("standard", ".json"),
        signatures=list(rws_signatures(RWS_DEPLOY).values()),
        test=DATA_SPLITS["test"],
        corrupted=rws_corrupted("test"),
    output:
        rows=f"{RWS_METRICS}/lambda.tsv",
    log:
        f"logs/rws_lambda_sweep/{DATASET}.log",
    benchmark:
        f"benchmarks/rws_lambda_sweep/{DATASET}.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        sweep=settings({k: RWS[k] for k in ("lambdas", "sweep_images", "eval_severities", "deploy_bits")}),
    message:
        "Accuracy against λ of every signature"
    script:
        "../scripts/rws_lambda_sweep.py"


rule rws_compose:
    input:
        standard=rws_model("standard"),
        standard_sidecar=rws_model("standard", ".json"),
        signatures=[rws_signature(c, RWS_DEPLOY) for c in RWS["compose"]],
        test=DATA_SPLITS["test"],
        corrupted=rws_corrupted("test"),
    output:
        rows=f"{RWS_METRICS}/compose.tsv",
    log:
        f"logs/rws_compose/{DATASET}.log",
    benchmark:
        f"benchmarks/rws_compose/{DATASET}.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        compose=settings({k: RWS[k] for k in ("compose", "compose_lambdas", "compose_severity", "sweep_images")}),
    message:
        "Composing the {params.compose} signatures"
    script:
        "../scripts/rws_compose.py"


rule rws_oracle_free:
    input:
        standard=rws_model("standard"),
        standard_sidecar=rws_model("standard", ".json"),
        signatures=list(rws_signatures(RWS_DEPLOY).values()),
        adapt=DATA_SPLITS["adapt"],
        corrupted_adapt=rws_corrupted("adapt"),
        test=DATA_SPLITS["test"],
        corrupted=rws_corrupted("test"),
    output:
        rows=f"{RWS_METRICS}/oracle_free.tsv",
        detector=f"{RWS_METRICS}/oracle_free_detector.tsv",
        classifier=f"{RWS_DIR}/oracle_free_classifier.safetensors",
    log:
        f"logs/rws_oracle_free/{DATASET}.log",
    benchmark:
        f"benchmarks/rws_oracle_free/{DATASET}.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        oracle_free=settings({k: RWS[k] for k in ("oracle_free", "lambdas", "eval_severities", "deploy_bits")}),
    message:
        "Oracle-free patching: a corruption classifier picks the signature and λ"
    script:
        "../scripts/rws_oracle_free.py"


rule rws_transfer:
    input:
        targets=[rws_model(t) for t in RWS_TARGETS],
        target_sidecars=[rws_model(t, ".json") for t in RWS_TARGETS],
        signatures=list(rws_signatures(RWS_DEPLOY).values()),
        test=DATA_SPLITS["test"],
        corrupted=rws_corrupted("test"),
    output:
        rows=f"{RWS_METRICS}/transfer.tsv",
    log:
        f"logs/rws_transfer/{DATASET}.log",
    benchmark:
        f"benchmarks/rws_transfer/{DATASET}.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        transfer=settings({k: RWS[k] for k in ("lambda", "eval_severities", "deploy_bits")}),
    message:
        f"Transferring the signatures to {', '.join(RWS_TARGETS)}"
    script:
        "../scripts/rws_transfer.py"


rule report_rws:
    input:
        metrics=rws_metric_files(),
        detector=rules.rws_oracle_free.output.detector,
        classifier=rules.rws_oracle_free.output.classifier,
        models=[rws_model(m) for m in RWS_EVALUATED],
        signatures=[rws_signature(c, v) for v in RWS_VARIANTS for c in RWS_CORRUPTIONS],
        sidecars=[rws_signature(c, v, ".json") for v in RWS_VARIANTS for c in RWS_CORRUPTIONS],
    output:
        all=f"{RESULTS}/metrics/rws.tsv",
        tables=[
            report(path, caption="../report/rws_tables.rst", category="Robust weight signatures")
            for path in RWS_TABLES.values()
        ],
        figures=[
            report(path, caption=f"../report/rws_{name}.rst", category="Robust weight signatures")
            for name, path in RWS_FIGURES.items()
        ],
        figures_pdf=RWS_FIGURES_PDF,
    log:
        f"logs/report_rws/{DATASET}.log",
    benchmark:
        f"benchmarks/report_rws/{DATASET}.tsv"
    conda:
        ENV
    params:
        report=settings(RWS),
        models={m: rws_model(m) for m in RWS_EVALUATED},
        signatures={v: rws_signatures(v) for v in RWS_VARIANTS},
        tables=RWS_TABLES,
        figures=RWS_FIGURES,
    message:
        "Gathering the RWS metrics, writing the RWS tables and figures"
    script:
        "../scripts/report_rws.py"
