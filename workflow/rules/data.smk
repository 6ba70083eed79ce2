# The data: checked while the Snakefile is parsed (a misplaced folder fails in
# seconds, before any job is queued), then split and cached once per split:
# decoded uint8 tensors (<split>.safetensors), or a file list (<split>.tsv) for
# large file-backed splits, decoded on demand. Every later job reads these.
#
#   results/<dataset>/data/{train,adapt,test}.{safetensors|tsv}          P.data
#   results/<dataset>/data/<shift>/{adapt,test}.*                         P.shifts[shift]["all"]
#   results/<dataset>/data/<shift>/<corruption>/<severity>/{adapt,test}.*  P.shifts[shift]["<c>/<s>"]
#   results/<dataset>/data/corrupted/<split>/{<corruption>,labels}.npy    P.corrupted_output(split), decoded
#   results/<dataset>/data/corrupted/<split>/<corruption>/<severity>/<class>/<file>   … of a file list


rule prepare_data:
    output:
        **P.data,
    log:
        f"logs/prepare_data/{DATASET}.log",
    benchmark:
        f"benchmarks/prepare_data/{DATASET}.tsv"
    conda:
        ENV
    params:
        rerun=P.rerun("prepare_data"),
    message:
        f"Decoding and splitting {DATASET}"
    script:
        "../scripts/prepare_data.py"


# One job per configured shift writes the adapt / test split of every part (P.shifts[shift]).
rule prepare_shift:
    output:
        splits=directory(P.shift_dir("{shift}")),
    log:
        f"logs/prepare_shift/{DATASET}/{{shift}}.log",
    benchmark:
        f"benchmarks/prepare_shift/{DATASET}/{{shift}}.tsv"
    wildcard_constraints:
        shift=alternatives(P.shifts),
    conda:
        ENV
    params:
        rerun=lambda w: P.rerun("prepare_shift", w.shift),
    message:
        "Splitting the shifted set {wildcards.shift}"
    script:
        "../scripts/prepare_shift.py"


# Corrupted copies of the adapt and test splits, for the configured corruptions
# and severities, at the constants of the images' resolution, generated once: a
# decoded split in Hendrycks' CIFAR-10-C layout (<corruption>.npy with severity s
# in rows (s−1)·N … s·N−1, labels.npy), a file list in the ImageNet-C layout (one
# JPEG, quality 85, per image, written in chunks). With data.corrupted_from:
# imagenet-c the on-disk ImageNet-C is read instead and this rule does not run.
rule corrupt_split:
    input:
        split=lambda w: P.data[w.split],
    output:
        corrupted=directory(P.corrupted_output("{split}")),
    log:
        f"logs/corrupt_split/{DATASET}/{{split}}.log",
    benchmark:
        f"benchmarks/corrupt_split/{DATASET}/{{split}}.tsv"
    conda:
        ENV
    params:
        rerun=P.rerun("corrupt_split"),
    message:
        f"Corrupting the {{wildcards.split}} split ({len(P.corruptions)} corruptions × {len(P.severities)} severities)"
    script:
        "../scripts/corrupt_split.py"
