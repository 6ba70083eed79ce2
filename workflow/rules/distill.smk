# Robust distillation (Jain et al. 2023): a small teacher made robust with
# augmentation distils into the last block(s) and three heads of a larger
# student trained normally; uncertainty picks a head per test input. Full
# fine-tuning of the student with the same augmentation is the cost baseline.
#
#   results/<dataset>/models/{teacher,student,student-multihead,student-finetuned}.{safetensors,json}
#   results/<dataset>/metrics/distill/<model>.{tsv,json}   tidy rows; what the evaluation chose
#   results/<dataset>/metrics/distill.tsv                  every distillation row (merged into all.tsv)
#   results/<dataset>/tables/distill.{csv,md}              the table, with the cost comparison
#
# Only the `distill` section (and the data split) reaches these rules' params,
# so changing the soups, the threat models or the parent reruns none of them.


include: "distill_common.smk"


rule train_teacher:
    input:
        train=rules.prepare_data.output.train,
    output:
        weights=distill_checkpoint("teacher"),
        sidecar=distill_sidecar("teacher"),
    log:
        f"logs/train_teacher/{DATASET}/teacher.log",
    benchmark:
        f"benchmarks/train_teacher/{DATASET}/teacher.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        teacher=settings(DISTILL["teacher"]),
        augmentation=settings(DISTILL["augmentation"]),
        context=DISTILL_CONTEXT,
    message:
        f"Training the robust teacher ({DISTILL['teacher']['architecture']}, width {DISTILL['teacher']['width']}) "
        f"on {DISTILL['augmentation']['kind']}"
    script:
        "../scripts/train_teacher.py"


rule train_student:
    input:
        train=rules.prepare_data.output.train,
    output:
        weights=distill_checkpoint("student"),
        sidecar=distill_sidecar("student"),
    log:
        f"logs/train_student/{DATASET}/student.log",
    benchmark:
        f"benchmarks/train_student/{DATASET}/student.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        student=settings(DISTILL["student"]),
        context=DISTILL_CONTEXT,
    message:
        f"Training the student ({DISTILL['student']['architecture']}, width {DISTILL['student']['width']}) normally"
    script:
        "../scripts/train_student.py"


rule distill_student:
    input:
        teacher=rules.train_teacher.output.weights,
        teacher_sidecar=rules.train_teacher.output.sidecar,
        student=rules.train_student.output.weights,
        student_sidecar=rules.train_student.output.sidecar,
        train=rules.prepare_data.output.train,
    output:
        weights=distill_checkpoint("student-multihead"),
        sidecar=distill_sidecar("student-multihead"),
    log:
        f"logs/distill_student/{DATASET}/student-multihead.log",
    benchmark:
        f"benchmarks/distill_student/{DATASET}/student-multihead.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        multihead=settings(DISTILL["multihead"]),
        distillation=settings(DISTILL["distillation"]),
        augmentation=settings(DISTILL["augmentation"]),
        context=DISTILL_CONTEXT,
    message:
        f"Distilling the teacher into the last {DISTILL['multihead']['trainable_blocks']} block(s) and three "
        "heads of the student"
    script:
        "../scripts/distill_student.py"


rule finetune_student:
    input:
        student=rules.train_student.output.weights,
        student_sidecar=rules.train_student.output.sidecar,
        train=rules.prepare_data.output.train,
    output:
        weights=distill_checkpoint("student-finetuned"),
        sidecar=distill_sidecar("student-finetuned"),
    log:
        f"logs/finetune_student/{DATASET}/student-finetuned.log",
    benchmark:
        f"benchmarks/finetune_student/{DATASET}/student-finetuned.tsv"
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        finetune=settings(DISTILL["finetune"]),
        augmentation=settings(DISTILL["augmentation"]),
        context=DISTILL_CONTEXT,
    message:
        f"Fine-tuning all of the student on {DISTILL['augmentation']['kind']} (the cost baseline)"
    script:
        "../scripts/finetune_student.py"


rule evaluate_distilled:
    input:
        unpack(evaluate_distilled_input),
    output:
        rows=f"{RESULTS}/metrics/distill/{{dmodel}}.tsv",
        summary=f"{RESULTS}/metrics/distill/{{dmodel}}.json",
    log:
        f"logs/evaluate_distilled/{DATASET}/{{dmodel}}.log",
    benchmark:
        f"benchmarks/evaluate_distilled/{DATASET}/{{dmodel}}.tsv"
    wildcard_constraints:
        dmodel="|".join(DISTILL_MODELS),
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        evaluate=evaluate_distilled_settings,
        corrupted_test=f"{RESULTS}/data/corrupted/test",
        corrupted_adapt=f"{RESULTS}/data/corrupted/adapt",
    message:
        "Clean and corrupted accuracy of {wildcards.dmodel}"
    script:
        "../scripts/evaluate_distilled.py"


rule report_distill:
    input:
        metrics=distill_metric_files(),
        sidecars=[distill_sidecar(m) for m in DISTILL_MODELS],
        summaries=distill_metric_files(".json"),
    output:
        all=f"{RESULTS}/metrics/distill.tsv",
        tables=[
            report(path, caption="../report/distill.rst", category="Robust distillation") for path in distill_tables()
        ],
    log:
        f"logs/report_distill/{DATASET}.log",
    benchmark:
        f"benchmarks/report_distill/{DATASET}.tsv"
    conda:
        ENV
    message:
        "Gathering the distillation metrics, writing the robust-distillation table"
    script:
        "../scripts/report_distill.py"
