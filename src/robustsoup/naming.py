"""Names of weight mixtures, torch-free (the workflow names its soups when it parses)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal

# The architecture prefix of a RobustBench model-zoo entry (robustbench:<name>).
ZOO_PREFIX = "robustbench:"


def _format_weight(w: float) -> str:
    text = format(Decimal(str(round(w, 6))).normalize(), "f")
    return text.replace("-", "m")


def soup_id(weights: Mapping[str, float], base_models: Sequence[str]) -> str:
    """``soup-`` followed by every non-zero weight as ``<model>_<w>`` in base-model order.

    E.g. ``soup-linf_0.8-linf-l2_0.2``; a negative weight is written with
    ``m`` (``soup-linf_1.2-linf-l2_m0.2``) so that ids stay file-name safe.
    """
    parts = [f"{m}_{_format_weight(weights[m])}" for m in base_models if weights.get(m, 0) != 0]
    return "soup-" + "-".join(parts)
