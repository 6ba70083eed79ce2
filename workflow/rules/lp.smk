# Robust fine-tuning (Croce & Hein 2022): adversarially train the parent once,
# fine-tune it briefly towards each target threat model, evaluate every model
# (the soups on the lines between them too, rules/soups.smk) clean and under
# attack, gather every study's metrics and write the accuracy table.
#
# Scheduling: every job that computes takes the config's `threads` (auto: a
# quarter of --cores, at least 1), and the chain parent → fine-tunes → soup
# selection has the highest priorities, so the long critical path starts first.
# Every RWS and distillation rule comes next (priority 10: their long jobs, such
# as rws_oracle_free, start before the many short evaluate_model and make_soup
# jobs, which then fill the cores at the end instead of one job running alone).


rule pretrain:
    input:
        train=P.data["train"],
        weights=list(P.external_weights().values()),
    output:
        weights=P.model(P.parent),
        sidecar=P.model(P.parent, ".json"),
    log:
        f"logs/pretrain/{RUN}/{P.parent}.log",
    benchmark:
        f"benchmarks/pretrain/{RUN}/{P.parent}.tsv"
    priority: 50
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("pretrain"),
        nodes=T.nodes("pretrain"),
    params:
        rerun=P.rerun("pretrain"),
    message:
        f"Adversarial training of the parent {P.parent}"
    script:
        "../scripts/pretrain.py"


rule pretrain_reference:
    input:
        train=P.data["train"],
    output:
        weights=P.model("{reference}"),
        sidecar=P.model("{reference}", ".json"),
    log:
        f"logs/pretrain_reference/{RUN}/{{reference}}.log",
    benchmark:
        f"benchmarks/pretrain_reference/{RUN}/{{reference}}.tsv"
    wildcard_constraints:
        reference=alternatives(P.references),
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("pretrain"),
        nodes=T.nodes("pretrain"),
    params:
        rerun=lambda w: P.rerun("pretrain_reference", w.reference),
    message:
        "Training the reference {wildcards.reference} from scratch with the parent's budget"
    script:
        "../scripts/pretrain_reference.py"


rule finetune:
    input:
        parent=P.model(P.parent),
        parent_sidecar=P.model(P.parent, ".json"),
        train=P.data["train"],
    output:
        weights=P.model(f"{P.parent}-{{target}}"),
        sidecar=P.model(f"{P.parent}-{{target}}", ".json"),
    log:
        f"logs/finetune/{RUN}/{P.parent}-{{target}}.log",
    benchmark:
        f"benchmarks/finetune/{RUN}/{P.parent}-{{target}}.tsv"
    priority: 40
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=lambda w: T.gpus("finetune", w.target),
        nodes=lambda w: T.nodes("finetune", w.target),
    params:
        rerun=lambda w: P.rerun("finetune", w.target),
    message:
        f"Fine-tuning {P.parent} towards {{wildcards.target}}"
    script:
        "../scripts/finetune.py"


rule evaluate_model:
    input:
        weights=P.model("{model}"),
        sidecar=P.model("{model}", ".json"),
        test=P.data["test"],
    output:
        **P.evaluation_outputs("{model}"),
    log:
        f"logs/evaluate_model/{RUN}/{{model}}.log",
    benchmark:
        f"benchmarks/evaluate_model/{RUN}/{{model}}.tsv"
    wildcard_constraints:
        model=P.evaluated_models(sharded=False),
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        rerun=P.rerun("evaluate_model"),
    message:
        "Clean and robust accuracy of {wildcards.model}"
    script:
        "../scripts/evaluate_model.py"


# evaluate.shards > 1: each shard job attacks a contiguous run of whole attack batches of one model; the
# merge writes what evaluate_model would. The shards' files are kept (a few kB): rerunning the merge alone
# never repeats the attacks.
rule evaluate_model_shard:
    input:
        weights=P.model("{model}"),
        sidecar=P.model("{model}", ".json"),
        test=P.data["test"],
    output:
        **P.evaluation_shard_outputs("{model}", "{shard}"),
    log:
        f"logs/evaluate_model_shard/{RUN}/{{model}}-{{shard}}.log",
    benchmark:
        f"benchmarks/evaluate_model_shard/{RUN}/{{model}}-{{shard}}.tsv"
    wildcard_constraints:
        model=P.evaluated_models(sharded=True),
        shard=r"\d+",
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        shard=lambda w: int(w.shard),
        rerun=P.rerun("evaluate_model_shard"),
    message:
        "Clean and robust accuracy of {wildcards.model}, shard {wildcards.shard}"
    script:
        "../scripts/evaluate_model_shard.py"


rule merge_model_shards:
    input:
        **P.evaluation_shards("{model}"),
    output:
        **P.evaluation_outputs("{model}"),
    log:
        f"logs/merge_model_shards/{RUN}/{{model}}.log",
    benchmark:
        f"benchmarks/merge_model_shards/{RUN}/{{model}}.tsv"
    wildcard_constraints:
        model=P.evaluated_models(sharded=True),
    conda:
        ENV
    params:
        rerun=P.rerun("merge_model_shards"),
    message:
        "Merging the evaluation shards of {wildcards.model}"
    script:
        "../scripts/merge_model_shards.py"


rule report_lp:
    input:
        metrics=P.metric_files(),
        studies=list(P.gathered_studies().values()),
        sidecars=[P.model(m, ".json") for m in P.base_models + P.references],
    output:
        all=f"{RESULTS}/metrics/all.tsv",
        table_csv=report_csv(P.table("accuracy", ".csv"), "lp", "accuracy"),
        table_md=P.table("accuracy"),
        table_page=report_page(P.table("accuracy", ".html"), "lp", "Tables", "accuracy"),
    log:
        f"logs/report_lp/{RUN}.log",
    benchmark:
        f"benchmarks/report_lp/{RUN}.tsv"
    conda:
        ENV
    params:
        models=P.all_models,
        studies=P.gathered_studies(),
        soups=P.soup_mixtures(),
        rerun=P.rerun("report_lp"),
    message:
        f"Gathering the metrics of {len(P.all_models)} models and every study, writing the accuracy table"
    script:
        "../scripts/report_lp.py"
