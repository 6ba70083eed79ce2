# Robust distillation (Jain et al. 2023): a small teacher made robust with
# augmentation distils into the last block(s) and three heads of a larger
# student trained normally; uncertainty picks a head per test input. Full
# fine-tuning of the student with the same augmentation is the cost baseline.
#
#   results/<dataset>/models/{teacher,student,student-multihead,student-finetuned}.{safetensors,json}
#   results/<dataset>/metrics/distill/<model>.{tsv,json}   tidy rows; what the evaluation chose
#   results/<dataset>/metrics/distill.tsv                  every distillation row (merged into all.tsv)
#   results/<dataset>/tables/distill.{csv,md,html}         the table, with the cost comparison
#   results/<dataset>/figures/distill.{png,pdf,html}       the table at a glance
#
# Only the `distill` section (and the data split) reaches these rules' rerun
# params, so changing the soups, the threat models or the parent reruns none
# of them. Included only when distill.enabled.

D = P.distill


rule train_teacher:
    input:
        weights=list(P.external_weights("teacher").values()),
        train=P.data["train"],
    output:
        weights=P.model("teacher"),
        sidecar=P.model("teacher", ".json"),
    log:
        f"logs/train_teacher/{RUN}/teacher.log",
    benchmark:
        f"benchmarks/train_teacher/{RUN}/teacher.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("distill", "teacher", "training"),
        nodes=T.nodes("distill", "teacher", "training"),
    params:
        rerun=P.rerun("train_teacher"),
    message:
        f"Training the robust teacher ({D.spec['teacher']['architecture']}, width {D.spec['teacher']['width']}) "
        f"on {D.spec['augmentation']['kind']}"
    script:
        "../scripts/train_teacher.py"


rule train_student:
    input:
        train=P.data["train"],
        weights=list(P.external_weights("student").values()),
    output:
        weights=P.model("student"),
        sidecar=P.model("student", ".json"),
    log:
        f"logs/train_student/{RUN}/student.log",
    benchmark:
        f"benchmarks/train_student/{RUN}/student.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("distill", "student", "training"),
        nodes=T.nodes("distill", "student", "training"),
    params:
        rerun=P.rerun("train_student"),
    message:
        f"Training the student ({D.spec['student']['architecture']}, width {D.spec['student']['width']}) normally"
    script:
        "../scripts/train_student.py"


rule distill_student:
    input:
        teacher=rules.train_teacher.output.weights,
        teacher_sidecar=rules.train_teacher.output.sidecar,
        student=rules.train_student.output.weights,
        student_sidecar=rules.train_student.output.sidecar,
        train=P.data["train"],
    output:
        weights=P.model("student-multihead"),
        sidecar=P.model("student-multihead", ".json"),
    log:
        f"logs/distill_student/{RUN}/student-multihead.log",
    benchmark:
        f"benchmarks/distill_student/{RUN}/student-multihead.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("distill", "distillation"),
        nodes=T.nodes("distill", "distillation"),
    params:
        rerun=P.rerun("distill_student"),
    message:
        f"Distilling the teacher into the last {D.spec['multihead']['trainable_blocks']} block(s) and three "
        "heads of the student"
    script:
        "../scripts/distill_student.py"


rule finetune_student:
    input:
        student=rules.train_student.output.weights,
        student_sidecar=rules.train_student.output.sidecar,
        train=P.data["train"],
    output:
        weights=P.model("student-finetuned"),
        sidecar=P.model("student-finetuned", ".json"),
    log:
        f"logs/finetune_student/{RUN}/student-finetuned.log",
    benchmark:
        f"benchmarks/finetune_student/{RUN}/student-finetuned.tsv"
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=T.gpus("distill", "finetune"),
        nodes=T.nodes("distill", "finetune"),
    params:
        rerun=P.rerun("finetune_student"),
    message:
        f"Fine-tuning all of the student on {D.spec['augmentation']['kind']} (the cost baseline)"
    script:
        "../scripts/finetune_student.py"


rule evaluate_distilled:
    input:
        unpack(lambda w: D.evaluation_inputs(w.dmodel)),
    output:
        rows=f"{RESULTS}/metrics/distill/{{dmodel}}.tsv",
        summary=f"{RESULTS}/metrics/distill/{{dmodel}}.json",
        points=f"{RESULTS}/metrics/distill/{{dmodel}}{D.POINTS}",
    log:
        f"logs/evaluate_distilled/{RUN}/{{dmodel}}.log",
    benchmark:
        f"benchmarks/evaluate_distilled/{RUN}/{{dmodel}}.tsv"
    wildcard_constraints:
        dmodel=alternatives(D.MODELS),
    priority: 10
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        rerun=lambda w: P.rerun("evaluate_distilled", w.dmodel),
    message:
        "Clean and corrupted accuracy of {wildcards.dmodel}"
    script:
        "../scripts/evaluate_distilled.py"


rule report_distill:
    input:
        metrics=D.metric_files(),
        sidecars=[P.model(m, ".json") for m in D.MODELS],
        summaries=D.metric_files(".json"),
    output:
        all=f"{RESULTS}/metrics/distill.tsv",
        table_csv=report_csv(P.table("distill", ".csv"), "distill", "distill"),
        table_md=P.table("distill"),
        table_page=report_page(P.table("distill", ".html"), "distill", "Tables", "distill"),
        figure=D.figure(),
        figure_pdf=D.figure(".pdf"),
        figure_page=report_page(D.figure(".html"), "distill", "Figures", "distill_figure"),
    log:
        f"logs/report_distill/{RUN}.log",
    benchmark:
        f"benchmarks/report_distill/{RUN}.tsv"
    priority: 10
    conda:
        ENV
    params:
        rerun=P.rerun("report_distill"),
    message:
        "Gathering the distillation metrics, writing the robust-distillation table and figure"
    script:
        "../scripts/report_distill.py"
