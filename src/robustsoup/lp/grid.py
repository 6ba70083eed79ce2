"""Soup grids: which affine combinations of the base models to build.

A soup is a weight vector over the base models (the parent and its
fine-tunes, in config order). Its id is derived from its weights, so the same
soup keeps its id (and its cached artifacts) when the grid around it changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from ..io import write_text_atomic
from ..naming import soup_id


@dataclass(frozen=True)
class Soup:
    """θ = Σ weights[m]·θ_m over base models ``m``; ``line`` names the grid line it lies on."""

    id: str
    weights: tuple[tuple[str, float], ...]
    line: str
    position: float  # weight on the line's second model

    def weight_dict(self) -> dict[str, float]:
        return dict(self.weights)


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
    from ..config import base_model_names

    spec = config["soups"]
    return line_grid(spec["lines"], **spec["weights"], base_models=base_model_names(config))


def grid_table(soups: Sequence[Soup], base_models: Sequence[str]) -> pd.DataFrame:
    """One row per soup: id, line, position on the line, one weight column per base model."""
    rows = [{"id": s.id, "line": s.line, "position": s.position, **s.weight_dict()} for s in soups]
    return pd.DataFrame(rows, columns=["id", "line", "position", *base_models])


def write_grid(soups: Sequence[Soup], base_models: Sequence[str], path) -> None:
    """Write ``soups/grid.tsv`` atomically (a header only when the grid is empty)."""
    write_text_atomic(path, grid_table(soups, base_models).to_csv(sep="\t", index=False))
