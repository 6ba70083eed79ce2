"""Robust Weight Signatures: the names and the config checks the workflow needs when it parses.

Torch-free (the Snakefile imports this module in every job it starts, SLURM
jobs included); the stages are in :mod:`robustsoup.rws.stages`.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import ConfigError
from ..data.corruptions import CORRUPTIONS

INIT = "init"
LAYER_RULES = ("ours", "reference")  # rws.layer_rule: which tensors a signature holds (see rws.layers)
QUANTIZATION_RANGES = ("signature", "experts")  # [min, max] per tensor of each signature, or per key over all
MAX_LEVELS = 1 << 16  # packed codes of up to 16 bits


def transfer_targets(config: Mapping) -> dict[str, str]:
    """Transfer targets and their initializations: ``standard-s<seed>-own`` from its own ``init-s<seed>``
    (trained from scratch with that seed), ``standard-s<seed>-shared`` from the shared ``init``."""
    spec = config["rws"]["transfer"]
    seed = spec["seed"]
    return {f"standard-s{seed}-{kind}": (f"init-s{seed}" if kind == "own" else INIT) for kind in spec["inits"]}


def variant_suffix(variant: str) -> str:
    """Model-name suffix of a signature variant: shallow → '', all → '-all', 8bit → '-8bit'."""
    return "" if variant == "shallow" else f"-{variant}"


def code_width(levels: int) -> int:
    """Bits per packed code of ``levels`` levels: ⌈log₂ levels⌉ (16 → 4, 8 → 3, 256 → 8)."""
    return max(1, (int(levels) - 1).bit_length())


def levels_problem(levels) -> str | None:
    """Why ``levels`` is not a usable number of quantization levels, or None if it is."""
    if isinstance(levels, bool) or not isinstance(levels, int) or not 2 <= levels <= MAX_LEVELS:
        return (
            f"quantization needs a whole number of levels from 2 to {MAX_LEVELS} (the reference's linear_quant "
            f"takes a number of levels: 16 for its '16-bit' signatures), got {levels!r}"
        )
    return None


def quantized_variants(config: Mapping) -> dict[str, dict]:
    """The quantized variants of the shallow signature and how each is made, in table order.

    ``<L>levels`` for each of ``rws.levels`` (packed codes, [min, max] as ``rws.levels_range``),
    then ``<b>bit`` for each of ``rws.bits`` (uint8/uint16 codes, ``rws.bits_range``):
    ``{"16levels": {"levels": 16, "range": "experts"}, "8bit": {"bits": 8, "range": "signature"}}``.
    """
    rws = config["rws"]
    out = {f"{n}levels": {"levels": n, "range": rws["levels_range"]} for n in rws["levels"]}
    out.update({f"{b}bit": {"bits": b, "range": rws["bits_range"]} for b in rws["bits"]})
    return out


def variants(config: Mapping) -> list[str]:
    """Signature variants of Table 1: all layers, shallow k (float32), then each quantized variant."""
    return ["all", "shallow", *quantized_variants(config)]


def parse_variant(variant: str) -> dict | None:
    """``16levels`` → {"levels": 16}, ``8bit`` → {"bits": 8}, ``shallow`` / ``all`` → None."""
    for suffix, key in (("levels", "levels"), ("bit", "bits")):
        number = variant.removesuffix(suffix)
        if number != variant and number.isdigit():
            return {key: int(number)}
    return None


def quantization_label(spec: Mapping) -> str:
    """A table label that cannot be misread: ``16 levels (4 bit)`` or ``8-bit codes (256 levels)``."""
    if "levels" in spec:
        return f"{spec['levels']} levels ({code_width(spec['levels'])} bit)"
    return f"{spec['bits']}-bit codes ({1 << spec['bits']} levels)"


def variant_label(variant: str, k: int) -> str:
    """Table 1's method label of a signature variant over ``k`` shallow layers."""
    if variant == "all":
        return "Standard + RWS (all layers)"
    if variant == "shallow":
        return f"Standard + RWS (shallow {k})"
    spec = parse_variant(variant)
    if spec is None:
        raise ValueError(f"unknown signature variant {variant!r}; expected all, shallow, <L>levels or <b>bit")
    return f"Standard + RWS (shallow {k}, {quantization_label(spec)})"


def deploy_variant(config: Mapping) -> str:
    """The variant used by Table 4, the λ sweep, composition, the oracle-free mode and transfer: ``rws.deploy``."""
    return config["rws"]["deploy"]


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
    for n in rws["levels"]:
        if levels_problem(n):
            raise ConfigError(f"config key 'rws.levels': {levels_problem(n)}")
    deploy, choices = deploy_variant(config), ["shallow", *quantized_variants(config)]
    if deploy not in choices:
        raise ConfigError(
            f"config key 'rws.deploy': {deploy!r} is not a signature this run makes; expected one of {choices} "
            f"(shallow: float32; <L>levels for L in rws.levels {rws['levels']}; <b>bit for b in rws.bits {rws['bits']})"
        )
    outside = [c for c in rws["compose"] if c not in rws["corruptions"]]
    if outside:
        raise ConfigError(f"config key 'rws.compose': {outside} are not in rws.corruptions {rws['corruptions']}")
    if rws["compose_severity"] not in data["severities"]:
        raise ConfigError(
            f"config key 'rws.compose_severity': {rws['compose_severity']} is not in data.severities "
            f"{data['severities']}"
        )
    seeds = config.get("seeds") or [config["seed"]]  # every training seed (config key seeds)
    if rws["transfer"]["seed"] in seeds:
        raise ConfigError(
            f"config key 'rws.transfer.seed': must differ from every training seed (seeds {seeds}) so the "
            "targets are other models"
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


# The checks robustsoup.run_config.STUDY_CHECKS runs for RWS (skipped when rws.enabled is false).
RWS_CHECKS = (check_rws_config,)

# RWS's rules, whose rerun keys :func:`rws_rerun_keys` declares.
RWS_RULES = (
    "train_rws_init",
    "train_rws_model",
    "train_expert",
    "extract_rws",
    "quantize_rws",
    "evaluate_rws_model",
    "evaluate_patched",
    "rws_lambda_sweep",
    "rws_compose",
    "rws_oracle_free",
    "rws_transfer",
    "report_rws",
)


def rws_rerun_keys(config: Mapping, rule: str, wildcard: str | None, context: Mapping) -> dict:
    """The config keys RWS rule ``rule``'s outputs depend on (its ``rerun`` param,
    :meth:`robustsoup.paths.RunPaths.rerun`); ``context`` is what changes any RWS model (the training split,
    the seed, the architecture)."""
    rws = config["rws"]
    pick = lambda *keys: {k: rws[k] for k in keys}  # noqa: E731
    if rule == "train_rws_model":
        policy, targets = {}, transfer_targets(config)
        if wildcard == "augment":
            policy = pick("corruptions", "severities", "augment_clean_fraction")
        elif wildcard in targets:
            policy = {"seed": rws["transfer"]["seed"], "init": targets[wildcard]}
        return {"training": rws["finetune"], "policy": policy, "context": context}
    deploy = deploy_variant(config)
    memory = {"channels_last": config["evaluate"]["channels_last"]}  # the evaluations' memory format
    return {
        "train_rws_init": lambda: {"training": rws["init"], "context": context},
        "train_expert": lambda: {
            **pick("severities", "expert_selection"),
            "training": rws["finetune"],
            "context": context,
        },
        "extract_rws": lambda: {
            **pick("layers", "layer_rule", "norm_affine", "statistics"),
            "corruptions": list(rws["corruptions"]),
        },
        "quantize_rws": lambda: {"variants": quantized_variants(config)},
        "evaluate_rws_model": lambda: pick("corruptions", "eval_severities") | memory,
        "evaluate_patched": lambda: pick("corruptions", "eval_severities", "lambda") | memory,
        "rws_lambda_sweep": lambda: {**pick("lambdas", "sweep_images", "eval_severities"), "deploy": deploy} | memory,
        "rws_compose": lambda: pick("compose", "compose_lambdas", "compose_severity", "sweep_images") | memory,
        "rws_oracle_free": lambda: {**pick("oracle_free", "lambdas", "eval_severities"), "deploy": deploy} | memory,
        "rws_transfer": lambda: {**pick("lambda", "eval_severities"), "deploy": deploy} | memory,
        "report_rws": lambda: rws,
    }[rule]()
