"""The data rules' rerun keys (prepare_data, prepare_shift, corrupt_split) and the keys of ``data`` that
change what a training produces (every training's rerun keys hold them). Torch-free: the workflow reads them
when it parses."""

from __future__ import annotations

from collections.abc import Mapping

from .registry import IMAGEFOLDER, dataset_name

# Keys of `data` that change what a training produces (adding a shift must not retrain).
TRAINING_DATA_KEYS = (
    "root",
    "n_adapt",
    "n_test",
    "split_seed",
    "k_adapt_per_class",
    "cache_max_images",
    "train_per_class",
    "test_per_class",
    "decoder",
)
# An ImageFolder's keys of `data` that change what a training produces (in the rerun keys only when
# dataset is imagefolder, so other runs keep theirs).
IMAGEFOLDER_DATA_KEYS = ("name", "resolution", "mean", "std", "augmentation")
# Keys that shape every split cache, the run's and each shift's (test_per_class: each test split's size).
SPLITS_CACHE_KEYS = ("k_adapt_per_class", "cache_max_images", "test_per_class")

# The version of the corruption operations' pixels (robustsoup.data.corruption_ops): bump it when an operation's
# output changes, so that corrupt_split regenerates existing copies (2: motion_blur and snow reach 8 bits as the
# reference's ImageMagick output does, a 16-bit quantum then floor, instead of rounding).
CORRUPTION_OPS_VERSION = 2

# The data rules, whose rerun keys :func:`data_rerun_keys` declares.
DATA_RULES = ("prepare_data", "prepare_shift", "corrupt_split")


def training_data_keys(config: Mapping) -> dict:
    """The keys of ``data`` that change the training split (and, for an ImageFolder, its images)."""
    data = config["data"]
    keys = TRAINING_DATA_KEYS + (IMAGEFOLDER_DATA_KEYS if config["dataset"] == IMAGEFOLDER else ())
    return {k: data[k] for k in keys}


def data_rerun_keys(config: Mapping, rule: str, wildcard: str | None) -> dict:
    """The config keys data rule ``rule`` (:data:`DATA_RULES`)'s outputs depend on (its ``rerun`` param,
    :meth:`robustsoup.paths.RunPaths.rerun`); ``wildcard`` is prepare_shift's shift."""
    data = config["data"]
    return {
        "prepare_data": lambda: {"dataset": dataset_name(config), **training_data_keys(config)},
        "prepare_shift": lambda: {
            "root": data["shifts"][wildcard],
            "split_seed": data["split_seed"],
            "decoder": data["decoder"],
            **{k: data[k] for k in SPLITS_CACHE_KEYS},
        },
        "corrupt_split": lambda: {
            **{k: data[k] for k in ("corruptions", "severities")},
            "seed": config["seed"],
            "corruption_ops": CORRUPTION_OPS_VERSION,
        },
    }[rule]()
