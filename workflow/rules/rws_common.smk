# Robust Weight Signatures: names, paths and getters of the rules in rws.smk.

from robustsoup.rws.config import check_rws_config, deploy_variant, transfer_targets, variants

RWS = config["rws"]

try:
    check_rws_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None

# The evaluation reads the corrupted copies of the adapt and test splits (rule corrupt_split).
RWS_READY = RWS["enabled"] and all(s in CORRUPTED_SPLITS for s in ("adapt", "test"))
if RWS["enabled"] and not RWS_READY and workflow.is_main_process:
    print(
        "robustsoup: robust weight signatures skipped: they need the adapt and test splits decoded to "
        f"tensors, and {DATASET}'s are file lists (raise data.cache_max_images, or set rws.enabled: false)",
        file=sys.stderr,
    )

RWS_MODELS = f"{RESULTS}/models/rws"
RWS_DIR = f"{RESULTS}/rws"
RWS_METRICS = f"{RESULTS}/metrics/rws"
RWS_CORRUPTIONS = list(RWS["corruptions"])
RWS_VARIANTS = variants(config)  # all, shallow, <b>bit …
RWS_DEPLOY = deploy_variant(config)
RWS_TARGETS = transfer_targets(config)  # transfer target → its initialization
RWS_FINETUNED = ["standard", "augment", *RWS_TARGETS]
RWS_EVALUATED = ["standard", "augment", *[f"expert-{c}" for c in RWS_CORRUPTIONS]]

# What changes any RWS model: the training split, the seed and the architecture.
RWS_CONTEXT = settings(
    {
        "data": {k: config["data"][k] for k in TRAINING_DATA_KEYS},
        "dataset": DATASET,
        "seed": config["seed"],
        "model": config["model"],
    }
)


def rws_model(name, suffix=".safetensors"):
    return f"{RWS_MODELS}/{name}{suffix}"


def rws_signature(corruption, variant, suffix=".safetensors"):
    tag = "" if variant == "shallow" else f"-{variant}"
    return f"{RWS_DIR}/{corruption}{tag}{suffix}"


def rws_corrupted(split):
    folder = f"{RESULTS}/data/corrupted/{split}"
    return [f"{folder}/{c}.npy" for c in RWS_CORRUPTIONS] + [f"{folder}/labels.npy"]


def rws_signatures(variant):
    return {c: rws_signature(c, variant) for c in RWS_CORRUPTIONS}


def rws_metric_files():
    return [
        *[f"{RWS_METRICS}/models/{m}.tsv" for m in RWS_EVALUATED],
        *[f"{RWS_METRICS}/patched/{v}.tsv" for v in RWS_VARIANTS],
        f"{RWS_METRICS}/lambda.tsv",
        f"{RWS_METRICS}/compose.tsv",
        f"{RWS_METRICS}/oracle_free.tsv",
        f"{RWS_METRICS}/transfer.tsv",
    ]


RWS_TABLES = {
    f"{name}_{kind}": f"{RESULTS}/tables/rws_{name}.{kind}"
    for name in ("table1", "table4", "oracle_free", "transfer")
    for kind in ("csv", "md")
}
RWS_FIGURE_NAMES = ("lambda", "layer_norms", "compose")
RWS_FIGURES = {name: f"{RESULTS}/figures/rws_{name}.png" for name in RWS_FIGURE_NAMES}
RWS_FIGURES_PDF = [f"{RESULTS}/figures/rws_{name}.pdf" for name in RWS_FIGURE_NAMES]


def rws_outputs():
    """What `rule all` asks of robust weight signatures (nothing when disabled or unable to run)."""
    if not RWS_READY:
        return []
    return [f"{RESULTS}/metrics/rws.tsv", *RWS_TABLES.values(), *RWS_FIGURES.values()]


def rws_finetune_input(wildcards):
    init = RWS_TARGETS.get(wildcards.rws_model, "init")
    return {"init": rws_model(init), "init_sidecar": rws_model(init, ".json"), "train": DATA_SPLITS["train"]}


def rws_finetune_settings(wildcards):
    """What the model's training depends on, beyond the fine-tuning settings."""
    name = wildcards.rws_model
    if name == "augment":
        return settings({k: RWS[k] for k in ("corruptions", "severities", "augment_clean_fraction")})
    if name in RWS_TARGETS:
        return settings({"seed": RWS["transfer"]["seed"], "init": RWS_TARGETS[name]})
    return settings({})
