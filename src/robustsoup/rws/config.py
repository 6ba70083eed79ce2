"""Robust Weight Signatures: the names and the config checks the workflow needs when it parses.

Torch-free (the Snakefile imports this module in every job it starts, SLURM
jobs included); the stages are in :mod:`robustsoup.rws.stages`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import ConfigError
from ..data.corruptions import CORRUPTIONS

INIT = "init"


def transfer_targets(config: Mapping) -> dict[str, str]:
    """Transfer targets and their initializations: ``standard-s<seed>-own`` from its own ``init-s<seed>``
    (trained from scratch with that seed), ``standard-s<seed>-shared`` from the shared ``init``."""
    spec = config["rws"]["transfer"]
    seed = spec["seed"]
    return {f"standard-s{seed}-{kind}": (f"init-s{seed}" if kind == "own" else INIT) for kind in spec["inits"]}


def variant_suffix(variant: str) -> str:
    """Model-name suffix of a signature variant: shallow → '', all → '-all', 8bit → '-8bit'."""
    return "" if variant == "shallow" else f"-{variant}"


def variants(config: Mapping) -> list[str]:
    """Signature variants of Table 1: all layers, shallow k (float32), then each quantized width."""
    return ["all", "shallow", *[f"{b}bit" for b in config["rws"]["bits"]]]


def deploy_variant(config: Mapping) -> str:
    """The variant used by Table 4, the λ sweep, composition, the oracle-free mode and transfer."""
    bits = config["rws"]["deploy_bits"]
    return "shallow" if bits == 32 else f"{bits}bit"


def check_rws_config(config: Mapping) -> None:
    """Cross-key checks of the ``rws`` section that the schema cannot express; names the key.
    Nothing is checked when the section is disabled (``rws.enabled: false``)."""
    rws, data = config["rws"], config["data"]
    if not rws["enabled"]:
        return
    unknown = [c for c in rws["corruptions"] if c not in CORRUPTIONS]
    if unknown:
        raise ConfigError(
            f"config key 'rws.corruptions': unknown corruptions {unknown}; expected names from {list(CORRUPTIONS)}"
        )
    missing = [c for c in rws["corruptions"] if c not in data["corruptions"]]
    if missing:
        raise ConfigError(
            f"config key 'rws.corruptions': {missing} are not in data.corruptions {data['corruptions']}; "
            "the corrupted test split is generated for data.corruptions only"
        )
    for key in ("severities", "eval_severities"):
        outside = [s for s in rws[key] if s not in data["severities"]]
        if outside:
            raise ConfigError(
                f"config key 'rws.{key}': severities {outside} are not in data.severities {data['severities']}"
            )
    if not set(rws["severities"]) <= set(rws["eval_severities"]):
        raise ConfigError(
            f"config key 'rws.eval_severities': must include the training severities rws.severities "
            f"{rws['severities']} (Table 1 and 4 report those)"
        )
    if rws["deploy_bits"] != 32 and rws["deploy_bits"] not in rws["bits"]:
        raise ConfigError(
            f"config key 'rws.deploy_bits': {rws['deploy_bits']} is neither 32 nor one of rws.bits {rws['bits']}"
        )
    outside = [c for c in rws["compose"] if c not in rws["corruptions"]]
    if outside:
        raise ConfigError(f"config key 'rws.compose': {outside} are not in rws.corruptions {rws['corruptions']}")
    if rws["compose_severity"] not in data["severities"]:
        raise ConfigError(
            f"config key 'rws.compose_severity': {rws['compose_severity']} is not in data.severities "
            f"{data['severities']}"
        )
    if rws["transfer"]["seed"] == config["seed"]:
        raise ConfigError(
            f"config key 'rws.transfer.seed': must differ from seed ({config['seed']}) so the target is another model"
        )


def lambda_name(corruption: str, coefficient: float) -> str:
    """Model name of the standard model patched with ``corruption``'s signature at λ = ``coefficient``."""
    return f"rws-{corruption}-x{coefficient:g}"


def compound_name(a: str, b: str) -> str:
    """Name of the compound corruption ``b`` applied after ``a``."""
    return f"{a}+{b}"


def compose_name(a: str, la: float, b: str, lb: float) -> str:
    """Model name of the standard model patched with two signatures at once."""
    return f"rws-{a}-x{la:g}+{b}-x{lb:g}"
