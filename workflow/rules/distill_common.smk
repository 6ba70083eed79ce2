# Names, paths and params of robust distillation (rules in distill.smk).

from robustsoup.distill.config import DISTILL_MODELS, check_distill_config

DISTILL = config["distill"]

try:
    check_distill_config(config)
except ValueError as error:
    raise WorkflowError(str(error)) from None

# The evaluation reads the corrupted copies of the adapt and test splits (rule corrupt_split).
DISTILL_READY = DISTILL["enabled"] and all(s in CORRUPTED_SPLITS for s in ("adapt", "test"))
if DISTILL["enabled"] and not DISTILL_READY and workflow.is_main_process:
    print(
        "robustsoup: robust distillation skipped: its evaluation needs the adapt and test splits decoded "
        f"to tensors, and {DATASET}'s are file lists (raise data.cache_max_images, or set distill.enabled: false)",
        file=sys.stderr,
    )

# What changes any distillation model: the training split and the seed (not the soups or threats).
DISTILL_CONTEXT = settings(
    {"data": {k: config["data"][k] for k in TRAINING_DATA_KEYS}, "dataset": DATASET, "seed": config["seed"]}
)


def distill_checkpoint(name):
    return f"{RESULTS}/models/{name}.safetensors"


def distill_sidecar(name):
    return f"{RESULTS}/models/{name}.json"


def distill_corrupted_files(split):
    """The corrupted copies of a split that rule corrupt_split writes (every configured corruption)."""
    folder = f"{RESULTS}/data/corrupted/{split}"
    return [f"{folder}/{c}.npy" for c in CORRUPTIONS] + [f"{folder}/labels.npy"]


def distill_metric_files(suffix=".tsv"):
    return [f"{RESULTS}/metrics/distill/{m}{suffix}" for m in DISTILL_MODELS]


def distill_tables():
    return [f"{RESULTS}/tables/distill.csv", f"{RESULTS}/tables/distill.md"]


def distill_outputs():
    """What `rule all` asks of robust distillation (nothing when it is disabled or cannot run)."""
    if not DISTILL_READY:
        return []
    return [f"{RESULTS}/metrics/distill.tsv", *distill_tables()]


def evaluate_distilled_input(wildcards):
    files = {
        "weights": distill_checkpoint(wildcards.dmodel),
        "sidecar": distill_sidecar(wildcards.dmodel),
        "test": DATA_SPLITS["test"],
        "corrupted_test": distill_corrupted_files("test"),
    }
    if wildcards.dmodel == "student-multihead":  # head selection is calibrated on the adaptation split
        files["adapt"] = DATA_SPLITS["adapt"]
        files["corrupted_adapt"] = distill_corrupted_files("adapt")
    return files


def evaluate_distilled_settings(wildcards):
    wanted = {"evaluate": DISTILL["evaluate"], "corruptions": CORRUPTIONS, "severities": SEVERITIES}
    if wildcards.dmodel == "student-multihead":
        wanted["selection"] = DISTILL["selection"]
    return settings(wanted)
