"""Robust fine-tuning's config: the rerun keys of its rules (torch-free: the workflow reads them when it
parses)."""

from __future__ import annotations

from collections.abc import Mapping

# Robust fine-tuning's rules, whose rerun keys :func:`lp_rerun_keys` declares (the models' evaluation is
# robustsoup.evaluate.rerun's).
LP_RULES = ("pretrain", "pretrain_reference", "finetune", "report_lp")


def lp_rerun_keys(config: Mapping, rule: str, wildcard: str | None, context: Mapping) -> dict:
    """The config keys rule ``rule`` (:data:`LP_RULES`)'s outputs depend on (its ``rerun`` param,
    :meth:`robustsoup.paths.RunPaths.rerun`); ``wildcard`` is the reference's norm or the fine-tuning
    target, ``context`` what changes any training of robust fine-tuning and the soups (the training split,
    the seed, the data set, the model and the threat models)."""
    return {
        "pretrain": lambda: {"training": config["pretrain"], "context": context},
        "pretrain_reference": lambda: {"training": config["pretrain"], "norm": wildcard, "context": context},
        "finetune": lambda: {"training": config["finetune"][wildcard], "context": context},
        "report_lp": lambda: {k: config["soups"][k] for k in ("lines", "weights")},
    }[rule]()
