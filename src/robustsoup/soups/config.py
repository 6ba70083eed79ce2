"""The soups' config: their cross-key checks and the rerun keys of their rules (torch-free: the workflow
reads both when it parses)."""

from __future__ import annotations

from collections.abc import Mapping

from ..attacks.protocol import EVALUATION_PROTOCOL
from ..config import ConfigError, base_model_names

# The soups' rules, whose rerun keys :func:`soups_rerun_keys` declares.
SOUPS_RULES = ("make_soup", "report_soups", "select_soups", "evaluate_soups_shifts", "evaluate_ternary")


def check_soups_config(config: Mapping) -> None:
    """Cross-key checks of the ``soups`` section that the schema cannot express: every model a line, an
    ensemble or the ternary names is a model of the run; names the key."""
    names = base_model_names(config)
    for i, line in enumerate(config["soups"]["lines"]):
        for name in line:
            if name not in names:
                raise ConfigError(
                    f"config key 'soups.lines.{i}': model {name!r} is not a model of this run; "
                    f"expected one of {names} (the parent is named after pretrain.norm, "
                    "fine-tunes are <parent>-<target>)"
                )
        if line[0] == line[1]:
            raise ConfigError(f"config key 'soups.lines.{i}': a line needs two different models, found {line}")
    groups = [(f"soups.ensembles.{i}", m) for i, m in enumerate(config["soups"]["ensembles"])]
    if config["soups"]["ternary"]["enabled"]:
        groups.append(("soups.ternary.models", config["soups"]["ternary"]["models"]))
    for key, members in groups:
        unknown = [m for m in members if m not in names]
        if unknown:
            raise ConfigError(f"config key '{key}': {unknown} are not models of this run; expected names from {names}")
    weights = config["soups"]["weights"]
    if weights["stop"] < weights["start"]:
        raise ConfigError(
            f"config key 'soups.weights': stop ({weights['stop']}) must not be below start ({weights['start']})"
        )


# The checks robustsoup.run_config.STUDY_CHECKS runs for the soups (always: the soups have no switch).
SOUPS_CHECKS = (check_soups_config,)


def soups_rerun_keys(config: Mapping, rule: str, wildcard: str | None, context: Mapping) -> dict:
    """The config keys soups rule ``rule`` (:data:`SOUPS_RULES`)'s outputs depend on (its ``rerun`` param,
    :meth:`robustsoup.paths.RunPaths.rerun`); ``context`` is what changes any training of robust fine-tuning
    and the soups (the training split, the seed, the data set, the model and the threat models)."""
    soups, data = config["soups"], config["data"]
    shifts = {k: data[k] for k in ("corruptions", "severities")}
    return {
        "make_soup": lambda: {
            "batchnorm": {k: soups[k] for k in ("batchnorm", "batchnorm_images")},
            "context": context,
        },
        "report_soups": lambda: {k: soups[k] for k in ("lines", "weights")},
        "select_soups": lambda: {
            "search": soups["search"],
            "shifts": shifts,
            "data_shifts": data["shifts"],
            "context": context,
        },
        "evaluate_soups_shifts": lambda: {
            "ensembles": soups["ensembles"],
            "shifts": shifts,
            "data_shifts": data["shifts"],
            "channels_last": config["evaluate"]["channels_last"],
        },
        "evaluate_ternary": lambda: {
            "ternary": soups["ternary"],
            "threats": config["threats"],
            "norms": config["evaluate"]["threats"],
            "channels_last": config["evaluate"]["channels_last"],
            "protocol": EVALUATION_PROTOCOL,
        },
    }[rule]()
