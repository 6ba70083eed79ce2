"""Names a reader knows, for figures and tables: models, threat models with their ε, attacks.

Matplotlib-free (the table code and every job's import of the report package use it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

# Threat models as the metric rows name them ("none" is clean data), in the order tables use.
THREAT_ORDER = ("none", "Linf", "L2", "L1", "union")
# Clean accuracy on the attacked images only (robustsoup.evaluate.rows.CLEAN_ON_ATTACKED; spelled out here,
# since the report stays torch-free): no ε, no attack of its own.
CLEAN_ON_ATTACKED = "none@attacked"
THREAT_NAMES = {
    "none": "clean",
    CLEAN_ON_ATTACKED: "clean (attacked n)",
    "Linf": "L∞",
    "L2": "L2",
    "L1": "L1",
    "union": "union",
}
# Rows without an ε (and without an attack of their own: union combines the norms' attacks).
UNATTACKED = ("none", CLEAN_ON_ATTACKED)
NO_EPS = (*UNATTACKED, "union")
# Model-name tokens (the lower-case norm a parent is named after, a fine-tune's config key).
_TOKEN_NAMES = {"linf": "L∞", "l2": "L2", "l1": "L1", "none": "clean", "clean": "clean", "nominal": "nominal"}


def token_name(token: str) -> str:
    """``linf`` → ``L∞``, ``l2`` → ``L2``; an unknown token is returned unchanged."""
    return _TOKEN_NAMES.get(token.lower(), token)


def model_label(model: str, short: bool = False) -> str:
    """A reader's name for a model id of the robust-fine-tuning study.

    ``linf`` → ``L∞ parent``, ``linf-l2`` → ``L∞→L2 fine-tune`` (``short``: ``L∞``,
    ``L∞→L2``); any other id (a soup, an RWS model) is returned unchanged.
    """
    parent, _, target = model.partition("-")
    if parent.lower() not in ("linf", "l2", "l1"):
        return model
    if not target:
        return token_name(parent) if short else f"{token_name(parent)} parent"
    if "-" in target or target.startswith("soup"):
        return model
    name = f"{token_name(parent)}→{token_name(target)}"
    return name if short else f"{name} fine-tune"


def eps_text(eps: float) -> str:
    """ε as a reader knows it: ``8/255`` for a multiple of 1/255 below 1 that is not round (CIFAR's
    0.0313725…), else ``0.1``, ``3``, ``24``."""
    k = round(eps * 255)
    if 0 < eps < 1 and abs(eps * 255 - k) < 1e-6 and f"{eps:g}" != f"{k / 255:.2g}":
        return f"{k}/255"
    return f"{eps:g}"


def threat_label(threat: str, eps: float | None = None) -> str:
    """``Linf`` with ε 0.1 → ``L∞, ε=0.1``; ``none`` → ``clean``; ``union`` → ``union``."""
    name = THREAT_NAMES.get(threat, threat)
    if eps is None or threat in NO_EPS or not np.isfinite(eps) or eps == 0:
        return name
    return f"{name}, ε={eps_text(eps)}"


def threat_eps(metrics, threat: str) -> float | None:
    """The one ε of ``threat`` in tidy metric rows (``None`` when absent or when several)."""
    if "eps" not in getattr(metrics, "columns", ()):
        return None
    values = sorted(set(metrics.loc[metrics["threat"] == threat, "eps"]))
    return float(values[0]) if len(values) == 1 else None


def describe_threats(metrics, threats: Sequence[str] | None = None) -> str:
    """``L∞ ε=0.1, L2 ε=3, L1 ε=24`` from tidy metric rows (the norms that were attacked)."""
    threats = threats or [t for t in THREAT_ORDER if t in set(metrics["threat"])]
    parts = []
    for threat in threats:
        if threat in NO_EPS:
            continue
        eps = threat_eps(metrics, threat)
        parts.append(f"{THREAT_NAMES.get(threat, threat)} ε={eps_text(eps)}" if eps is not None else threat)
    return ", ".join(parts)


def attack_text(name: str) -> str:
    """An attack as the metric rows name it, for a reader: ``apgd-ce(20it×1)`` → ``APGD-CE, 20 iterations, 1 restart``.

    An APGD-CE + APGD-T plan (``apgd-ce+apgd-t(100it, 1+9×1 runs)``: CE restarts + target classes × APGD-T
    restarts) is AutoAttack's standard version when APGD-T restarts once per target, as in its L∞/L2
    (``1+9×1``) and L1 (``5+5×1``) protocols; more APGD-T restarts (``evaluate.mode: strong-l1``, ``5+9×5``)
    is a stronger attack than the standard one, and is named so.
    """
    fast = re.fullmatch(r"apgd-ce\((\d+)it×(\d+)\)", name)
    if fast:
        iterations, restarts = fast.groups()
        return f"APGD-CE, {iterations} iterations, {restarts} restart{'s' if restarts != '1' else ''}"
    plan = re.fullmatch(r"apgd-ce\+apgd-t\((\d+)it, ((\d+)\+(\d+)×(\d+)) runs\)", name)
    if plan:
        iterations, runs, _, targets, restarts_t = plan.groups()
        if restarts_t == "1":
            return f"APGD-CE + APGD-T (AutoAttack standard), {iterations} iterations, {runs} runs"
        return (
            f"APGD-CE + APGD-T (stronger than AutoAttack standard: {targets} target classes × {restarts_t} "
            f"restarts), {iterations} iterations, {runs} runs"
        )
    return name


def describe_attacks(metrics) -> str:
    """``APGD-CE, 20 iterations, 1 restart; n=160 test images`` from tidy metric rows (the attacked ones:
    clean rows and union, whose attack combines the norms', are left out)."""
    attacked = metrics[~metrics["threat"].isin(NO_EPS)]
    if attacked.empty:
        return ""
    names = sorted({a for a in attacked["attack"] if isinstance(a, str) and a and a not in ("union", "clean")})
    attacks = " / ".join(attack_text(a) for a in names)
    sizes = "/".join(str(n) for n in sorted(set(attacked["n"])))
    return f"{attacks}; n={sizes} test images" if attacks else f"n={sizes} test images"


def measurement_note(table, with_threats: bool = False) -> str:
    """``Clean: n=450 test images; attacks: APGD-CE, 20 iterations, 1 restart; n=160 test images`` (with
    ``with_threats``, the threat models and their ε after "attacks"); empty without an attack column."""
    if "attack" not in table.columns:
        return ""
    clean = table[table["threat"] == "none"]
    parts = [f"Clean: n={'/'.join(str(n) for n in sorted(set(clean['n'])))} test images"] if len(clean) else []
    attacks = describe_attacks(table)
    if attacks:
        parts.append(f"attacks ({describe_threats(table)}): {attacks}" if with_threats else f"attacks: {attacks}")
    return "; ".join(parts)
