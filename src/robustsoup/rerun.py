"""Each rule's ``rerun`` param: the canonical JSON of exactly the config keys its outputs depend on.

The keys are declared beside their owners, each a table of its rules (``<OWNER>_RULES``) and a function
``(config, rule, wildcard, context) -> dict``: the data rules' in :mod:`robustsoup.data.rerun`, a model
evaluation's in :mod:`robustsoup.evaluate.rerun`, robust fine-tuning's in :mod:`robustsoup.lp.config`, the
soups' in :mod:`robustsoup.soups.config`, RWS's in :mod:`robustsoup.rws.config`, distillation's in
:mod:`robustsoup.distill.config`. This module lists the owners and hands each the context that changes any of
its models; :meth:`robustsoup.paths.RunPaths.rerun` asks it. A change of a listed key reruns the rule, a change
elsewhere (or a reordering of keys) does not.

Torch-free: every job, SLURM jobs included, parses the Snakefile.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from .data.rerun import DATA_RULES, TRAINING_DATA_KEYS, data_rerun_keys, training_data_keys
from .distill.config import DISTILL_RULES, distill_rerun_keys
from .evaluate.rerun import EVALUATION_RULES, evaluation_rerun_keys
from .lp.config import LP_RULES, lp_rerun_keys
from .rws.config import RWS_RULES, rws_rerun_keys
from .soups.config import SOUPS_RULES, soups_rerun_keys


def settings(value: Any) -> str:
    """Canonical JSON of a config part: equal for equal content whatever the key order."""
    return json.dumps(value, sort_keys=True)


def training_context(config: Mapping[str, Any], seed: int | str) -> dict:
    """What changes any training of robust fine-tuning and the soups: the training split, the seed,
    the data set, the model and the threat models."""
    return {
        "data": training_data_keys(config),
        **{k: config[k] for k in ("dataset", "model", "threats")},
        "seed": seed,
    }


def study_context(config: Mapping[str, Any], dataset: str, seed: int | str) -> dict:
    """What changes any model of RWS or distillation: the training split's keys, the data set and the seed."""
    data = config["data"]
    return {"data": {k: data[k] for k in TRAINING_DATA_KEYS}, "dataset": dataset, "seed": seed}


def _owners(config: Mapping[str, Any], dataset: str, seed: int | str) -> list[tuple[tuple[str, ...], Callable]]:
    """(rules, their keys given rule and wildcard) of every owner; a disabled study's rules have none."""
    training = lambda: training_context(config, seed)  # noqa: E731
    study = lambda: study_context(config, dataset, seed)  # noqa: E731
    owners = [
        (DATA_RULES, lambda rule, wildcard: data_rerun_keys(config, rule, wildcard)),
        (EVALUATION_RULES, lambda rule, wildcard: evaluation_rerun_keys(config, rule, wildcard, {"seed": seed})),
        (LP_RULES, lambda rule, wildcard: lp_rerun_keys(config, rule, wildcard, training())),
        (SOUPS_RULES, lambda rule, wildcard: soups_rerun_keys(config, rule, wildcard, training())),
    ]
    if config["rws"]["enabled"]:  # what changes any RWS model: the training split, the seed and the architecture
        context = lambda: {**study(), "model": config["model"]}  # noqa: E731
        owners.append((RWS_RULES, lambda rule, wildcard: rws_rerun_keys(config, rule, wildcard, context())))
    if config["distill"]["enabled"]:  # the training split and the seed (not the soups or threats)
        owners.append((DISTILL_RULES, lambda rule, wildcard: distill_rerun_keys(config, rule, wildcard, study())))
    return owners


def rerun_keys(config: Mapping[str, Any], dataset: str, seed: int | str, rule: str, wildcard: str | None) -> str:
    """Canonical JSON of the config keys rule ``rule``'s outputs depend on, for ``seed`` (a seed, or the
    rules' ``{seed}`` placeholder) of the run on ``dataset`` (its name, ``data.name`` for an ImageFolder)."""
    for rules, keys in _owners(config, dataset, seed):
        if rule in rules:
            return settings(keys(rule, wildcard))
    raise KeyError(f"no rerun keys for rule {rule!r}")
