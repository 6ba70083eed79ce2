"""Soup grids: which affine combinations of the base models to build, and their names.

A soup is a weight vector over the base models (the parent and its
fine-tunes, in config order). Its id is derived from its weights, so the same
soup keeps its id (and its cached artifacts) when the grid around it changes.
Torch-free: the workflow names its soups when it parses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pandas as pd

from ..config import base_model_names
from ..io import write_text_atomic


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


def mixture_text(terms: Iterable[tuple[float, str]]) -> str:
    """A soup's weights as text, the one format of the tables and the command line: ``[(1.2, "linf"),
    (-0.2, "linf-l2")]`` → ``1.2·linf − 0.2·linf-l2`` (a leading negative: ``−0.2·a + 1.2·b``); zero
    weights are left out (all zero: ``0``)."""
    parts = []
    for w, name in terms:
        if w == 0:
            continue
        sign = ("" if w > 0 else "−") if not parts else ("+ " if w > 0 else "− ")
        parts.append(f"{sign}{abs(w):g}·{name}")
    return " ".join(parts) or "0"


@dataclass(frozen=True)
class Soup:
    """θ = Σ weights[m]·θ_m over base models ``m``; ``line`` names the grid line it lies on."""

    id: str
    weights: tuple[tuple[str, float], ...]
    line: str
    position: float  # weight on the line's second model

    def weight_dict(self) -> dict[str, float]:
        return dict(self.weights)

    def mixture(self) -> str:
        """Its non-zero weights as text, in base-model order: ``0.8·linf + 0.2·linf-l2``."""
        return mixture_text((w, m) for m, w in self.weights)


def line_weights(start: float, stop: float, step: float) -> list[float]:
    """``start``, ``start + step``, … up to ``stop`` inclusive, rounded to 6 decimals."""
    count = int(round((stop - start) / step))
    values = [round(start + i * step, 6) for i in range(count + 1)]
    return [v for v in values if v <= stop + 1e-9]


def line_grid(
    lines: Sequence[Sequence[str]], start: float, stop: float, step: float, base_models: Sequence[str]
) -> list[Soup]:
    """Soups (1 − w)·θ_A + w·θ_B for every line [A, B] and weight w.

    The end points w = 0 and w = 1 are the base models themselves and are
    not soups; they are evaluated as models. Soups shared by two lines are
    listed once.
    """
    soups: dict[str, Soup] = {}
    for a, b in lines:
        for w in line_weights(start, stop, step):
            if w in (0.0, 1.0):
                continue
            weights = {a: round(1.0 - w, 6), b: round(w, 6)}
            sid = soup_id(weights, base_models)
            ordered = tuple((m, weights.get(m, 0.0)) for m in base_models)
            soups.setdefault(sid, Soup(sid, ordered, line=f"{a}~{b}", position=w))
    return list(soups.values())


def grid_from_config(config: Mapping) -> list[Soup]:
    """The soup grid the config asks for (see ``soups`` in the config schema)."""
    spec = config["soups"]
    return line_grid(spec["lines"], **spec["weights"], base_models=base_model_names(config))


def grid_table(soups: Sequence[Soup], base_models: Sequence[str]) -> pd.DataFrame:
    """One row per soup: id, line, position on the line, one weight column per base model."""
    rows = [{"id": s.id, "line": s.line, "position": s.position, **s.weight_dict()} for s in soups]
    return pd.DataFrame(rows, columns=["id", "line", "position", *base_models])


def write_grid(soups: Sequence[Soup], base_models: Sequence[str], path) -> None:
    """Write ``soups/grid.tsv`` atomically (a header only when the grid is empty)."""
    write_text_atomic(path, grid_table(soups, base_models).to_csv(sep="\t", index=False))


def simplex_grid(k: int, step: float, extend: float = 0.0) -> list[tuple[float, ...]]:
    """Weight vectors of ``k`` models on a lattice of spacing ``step`` with Σw = 1.

    With ``extend`` = 0 this is the simplex (all w ≥ 0); ``extend`` = e lets
    every weight go down to −e (extrapolation outside the simplex, weights
    then reach up to 1 + (k−1)·e). For k = 4 and step 0.1 the simplex has
    286 points (the soups paper's grid).
    """
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    units = int(round(1 / step))
    if abs(units * step - 1) > 1e-9:
        raise ValueError(f"step {step} must divide 1 (e.g. 0.1, 0.05, 0.25)")
    low = -int(round(extend / step))
    total = units

    def compositions(parts: int, remaining: int):
        if parts == 1:
            if low <= remaining:
                yield (remaining,)
            return
        for first in range(remaining - low * (parts - 1), low - 1, -1):
            for rest in compositions(parts - 1, remaining - first):
                yield (first, *rest)

    return [tuple(round(c * step, 6) for c in combo) for combo in compositions(k, total)]
