"""Robust distillation: the model names and the config checks the workflow needs when it parses.

Torch-free (the Snakefile imports this module in every job it starts, SLURM
jobs included); the stages are in :mod:`robustsoup.distill.stages`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..config import ConfigError

log = logging.getLogger(__name__)

TEACHER, STUDENT, MULTIHEAD, FINETUNED = "teacher", "student", "student-multihead", "student-finetuned"
DISTILL_MODELS = (TEACHER, STUDENT, FINETUNED, MULTIHEAD)
# distill.selection.calibration: which shifted adaptation images choose the thresholds (distill.calibration)
CALIBRATIONS = ("held-out", "evaluated")
CALIBRATION_LABELS = {
    "held-out": "calibrated on clean and held-out-shift adaptation images, the distillation's own augmentation",
    "evaluated": "calibrated on adaptation images with the evaluated corruptions: leaks the test shifts",
}


def multihead_model_names(config: Mapping) -> list[str]:
    """``student-multihead`` (the configured rule) and ``student-multihead-<rule>`` for every ablated rule."""
    selection = config["distill"]["selection"]
    return [MULTIHEAD] + [f"{MULTIHEAD}-{r}" for r in selection["ablate"] if r != selection["rule"]]


def teacher_shift(config: Mapping) -> dict:
    """The teacher's shifted data: ``distill.augmentation`` with ``distill.teacher.clean_fraction`` when set
    (0: every training image shifted, AugMix's recipe), else the augmentation's own fraction."""
    d = config["distill"]
    fraction = d["teacher"].get("clean_fraction")
    return {**d["augmentation"], **({} if fraction is None else {"clean_fraction": fraction})}


def leaked_corruptions(config: Mapping) -> list[str]:
    """Evaluated corruption types (``data.corruptions``) that ``distill.augmentation`` draws."""
    augmentation = config["distill"]["augmentation"]
    if "corruptions" not in augmentation["kind"]:
        return []
    evaluated = set(config["data"]["corruptions"])
    return [c for c in augmentation["corruptions"] if c in evaluated]


def check_distill_config(config: Mapping) -> None:
    """Checks of the ``distill`` section that the schema cannot express; a ConfigError naming the key.
    Nothing is checked when the section is disabled (``distill.enabled: false``)."""
    d = config["distill"]
    if not d["enabled"]:
        return
    selection = d["selection"]
    if selection["rule"] == "oracle":
        raise ConfigError(
            "config key 'distill.selection.rule': oracle needs the test labels; it is an "
            "ablation (distill.selection.ablate), not a rule to deploy"
        )
    for model in ("teacher", "student"):
        if d[model]["training"]["epochs"] == 0 and not d[model]["weights"]:
            raise ConfigError(
                f"config key 'distill.{model}.training.epochs': 0 epochs needs pretrained weights in "
                f"distill.{model}.weights"
            )
    if d["multihead"]["dropout"] == 0 and selection["mc_samples"] > 1:
        log.warning(
            "distill.multihead.dropout is 0: every MC-dropout sample is the same (the uncertainty is "
            "the entropy of the deterministic prediction)"
        )
    leaked = leaked_corruptions(config)
    if selection["calibration"] == "held-out" and leaked:
        raise ConfigError(
            f"config key 'distill.selection.calibration': held-out calibrates the head rule on "
            f"distill.augmentation, which draws {leaked}, corruption types that data.corruptions evaluates; "
            "drop them from distill.augmentation.corruptions, or set calibration: evaluated to accept "
            "that the thresholds see test shifts"
        )
    if d["augmentation"]["kind"] != "augmix" and not d["augmentation"]["corruptions"]:
        raise ConfigError(
            f"config key 'distill.augmentation.corruptions': {d['augmentation']['kind']} needs at least one corruption"
        )


# The checks robustsoup.run_config.STUDY_CHECKS runs for distillation (skipped when distill.enabled is false).
DISTILL_CHECKS = (check_distill_config,)

# Distillation's rules, whose rerun keys :func:`distill_rerun_keys` declares.
DISTILL_RULES = (
    "train_teacher",
    "train_student",
    "distill_student",
    "finetune_student",
    "evaluate_distilled",
    "report_distill",
)


def distill_rerun_keys(config: Mapping, rule: str, wildcard: str | None, context: Mapping) -> dict:
    """The config keys distillation rule ``rule``'s outputs depend on (its ``rerun`` param,
    :meth:`robustsoup.paths.RunPaths.rerun`); ``context`` is what changes any of its models (the training
    split and the seed)."""
    d, data = config["distill"], config["data"]
    if rule == "evaluate_distilled":
        wanted = {
            "evaluate": d["evaluate"],
            "corruptions": list(data["corruptions"]),
            "severities": list(data["severities"]),
            "channels_last": config["evaluate"]["channels_last"],
        }
        return wanted | ({"selection": d["selection"]} if wildcard == MULTIHEAD else {})
    return {
        "train_teacher": lambda: {"teacher": d["teacher"], "augmentation": d["augmentation"], "context": context},
        "train_student": lambda: {"student": d["student"], "context": context},
        "distill_student": lambda: {
            **{k: d[k] for k in ("multihead", "distillation", "augmentation")},
            "context": context,
        },
        "finetune_student": lambda: {k: d[k] for k in ("finetune", "augmentation")} | {"context": context},
        "report_distill": lambda: {},
    }[rule]()
