# The data: checked while the Snakefile is parsed (a misplaced folder fails in
# seconds, before any job is queued), then split and cached once per split:
# decoded uint8 tensors (<split>.safetensors), or a file list (<split>.tsv) for
# large file-backed splits, decoded on demand. Every later job reads these.
#
#   results/<dataset>/data/{train,adapt,test}.{safetensors|tsv}          DATA_SPLITS
#   results/<dataset>/data/<shift>/{adapt,test}.*                         SHIFT_SPLITS[shift]["all"]
#   results/<dataset>/data/<shift>/<corruption>/<severity>/{adapt,test}.*  SHIFT_SPLITS[shift]["<c>/<s>"]

from robustsoup.data import DataLayoutError, part_dir, shift_parts, split_paths
from robustsoup.data.check import check_config_data

DATA = config["data"]
_CACHE = {"k_adapt_per_class": DATA["k_adapt_per_class"], "cache_max_images": DATA["cache_max_images"]}

# The quick form of `robustsoup data check`, for the data set and every shift.
if workflow.is_main_process:
    try:
        check_config_data(config)
    except (DataLayoutError, ValueError, KeyError) as error:
        raise WorkflowError(
            f"robustsoup: the data is not where the config says (data.root / data.shifts):\n{error}\n"
            "`robustsoup data check --dataset NAME --root PATH` runs the same check."
        ) from None

# {split: path} of the run's data set.
DATA_SPLITS = {s: str(p) for s, p in split_paths(DATASET, f"{RESULTS}/data", **_CACHE).items()}

# {shift: {part: {split: path}}}; parts are `all` or `<corruption>/<severity>`.
SHIFT_SPLITS = {
    shift: {
        part: {
            s: str(p)
            for s, p in split_paths(shift, part_dir(f"{RESULTS}/data/{shift}", part), part=part, **_CACHE).items()
        }
        for part in shift_parts(shift, DATA["corruptions"], DATA["severities"])
    }
    for shift in DATA["shifts"]
}


rule prepare_data:
    output:
        **DATA_SPLITS,
    log:
        f"logs/prepare_data/{DATASET}.log",
    benchmark:
        f"benchmarks/prepare_data/{DATASET}.tsv"
    conda:
        ENV
    params:
        dataset=config["dataset"],
        split=settings({k: DATA[k] for k in TRAINING_DATA_KEYS}),
    message:
        "Decoding and splitting {params.dataset}"
    script:
        "../scripts/prepare_data.py"


# One job per configured shift writes the adapt / test split of every part.
for _shift, _parts in SHIFT_SPLITS.items():

    rule:
        name:
            f"prepare_shift_{_shift.replace('-', '_')}"
        output:
            [path for splits in _parts.values() for path in splits.values()],
        log:
            f"logs/prepare_shift/{DATASET}/{_shift}.log",
        benchmark:
            f"benchmarks/prepare_shift/{DATASET}/{_shift}.tsv"
        conda:
            ENV
        params:
            shift=_shift,
            root=DATA["shifts"][_shift],
            parts=list(_parts),
            split=settings({"root": DATA["shifts"][_shift], "split_seed": DATA["split_seed"], **_CACHE}),
        message:
            f"Splitting the shifted set {_shift}"
        script:
            "../scripts/prepare_shift.py"


# Corrupted copies of the adapt and test splits (Hendrycks' CIFAR-10-C layout:
# <corruption>.npy with severity s in rows (s−1)·N … s·N−1, labels.npy), for the
# configured corruptions and severities, at the constants of the images'
# resolution. Generated once; a downloaded -C set in the same layout is
# interchangeable. Only for splits decoded to tensors (not file lists).
CORRUPTIONS = list(DATA["corruptions"])
SEVERITIES = list(DATA["severities"])
CORRUPTED_SPLITS = [s for s in ("adapt", "test") if DATA_SPLITS[s].endswith(".safetensors")]


rule corrupt_split:
    input:
        split=f"{RESULTS}/data/{{split}}.safetensors",
    output:
        [f"{RESULTS}/data/corrupted/{{split}}/{c}.npy" for c in CORRUPTIONS],
        labels=f"{RESULTS}/data/corrupted/{{split}}/labels.npy",
    log:
        f"logs/corrupt_split/{DATASET}/{{split}}.log",
    benchmark:
        f"benchmarks/corrupt_split/{DATASET}/{{split}}.tsv"
    conda:
        ENV
    params:
        corruptions=CORRUPTIONS,
        severities=SEVERITIES,
        seed=config["seed"],
    message:
        f"Corrupting the {{wildcards.split}} split ({len(CORRUPTIONS)} corruptions × {len(SEVERITIES)} severities)"
    script:
        "../scripts/corrupt_split.py"
