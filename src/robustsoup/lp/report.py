"""Robust fine-tuning's report: the accuracy table (the robust-finetuning paper's columns: clean,
per-norm and union accuracy, what each model was trained for and its cost) and the soup-line figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from ..report.figures import save_figure
from ..report.tables import THREAT_COLUMNS


def accuracy_table(metrics: pd.DataFrame, model_order: Sequence[str], grid: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model (in ``model_order``), one column per threat, accuracy in percent.

    Soups get a ``weights`` column from ``grid`` (``soups/grid.tsv``);
    every evaluated model appears, models not in ``model_order`` last.
    """
    clean = metrics[metrics["corruption"] == "none"]
    wide = clean.pivot_table(index="model", columns="threat", values="accuracy", aggfunc="first") * 100
    columns = [t for t in THREAT_COLUMNS if t in wide.columns]
    wide = wide[columns].rename(columns=THREAT_COLUMNS)
    order = [m for m in model_order if m in wide.index] + sorted(m for m in wide.index if m not in model_order)
    wide = wide.loc[order]
    wide.insert(0, "weights", "")
    if grid is not None and not grid.empty:
        base = [c for c in grid.columns if c not in ("id", "line", "position")]
        for _, soup in grid.iterrows():
            if soup["id"] in wide.index:
                terms = [(soup[m], m) for m in base if soup[m] != 0]
                wide.loc[soup["id"], "weights"] = mixture_text(terms)
    wide.index.name = "model"
    return wide.round(1)


def mixture_text(terms) -> str:
    """``[(1.2, "linf"), (-0.2, "linf-l2")]`` → ``1.2·linf − 0.2·linf-l2`` (a leading negative: ``−0.2·a + 1.2·b``)."""
    parts = []
    for i, (w, name) in enumerate(terms):
        sign = ("" if w > 0 else "−") if i == 0 else ("+ " if w > 0 else "− ")
        parts.append(f"{sign}{abs(w):g}·{name}")
    return " ".join(parts)


def add_training_columns(
    table: pd.DataFrame, trainings: dict[str, dict | None], parents: dict[str, str | None]
) -> pd.DataFrame:
    """Columns of the robust-finetuning paper's table: what a model was trained for, and its cost.

    ``cost`` is epochs × (attack steps + 1), forward-backward passes per
    training image; ``total cost`` adds the parent's (a fine-tune's real price).
    Models without a training record (soups) keep empty cells.
    """
    table = table.copy()
    trained, cost, total = [], [], []
    for model in table.index:
        record = trainings.get(model)
        if not record:
            trained.append("")
            cost.append(None)
            total.append(None)
            continue
        norms = "+".join(record.get("norms") or []) or "clean"
        trained.append(f"{norms}, {record['epochs']} ep × {record['attack_steps']} steps")
        own = record.get("cost")
        parent = parents.get(model)
        parent_cost = (trainings.get(parent) or {}).get("cost", 0) if parent else 0
        cost.append(own)
        total.append(own + parent_cost if own is not None else None)
    table["trained for"] = trained
    table["cost"] = pd.array(cost, dtype="Int64")
    table["total cost"] = pd.array(total, dtype="Int64")
    return table


def soup_line_points(metrics: pd.DataFrame, grid: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Accuracy along the line (1 − w)·θ_a + w·θ_b: columns position, threat, accuracy.

    The end points are the base models ``a`` (w = 0) and ``b`` (w = 1).
    """
    on_line = grid[grid["line"] == f"{a}~{b}"][["id", "position"]]
    positions = pd.concat(
        [on_line.rename(columns={"id": "model"}), pd.DataFrame({"model": [a, b], "position": [0.0, 1.0]})]
    )
    rows = metrics[metrics["corruption"] == "none"].merge(positions, on="model")
    return rows[["position", "threat", "accuracy", "n"]].sort_values("position")


def plot_soup_line(points: pd.DataFrame, a: str, b: str, path: str | Path, subtitle: str = "") -> list[Path]:
    """Plot accuracy (%) against w for every threat; write ``path`` (.png) and its .pdf twin."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=150)
    styles = {"none": "k-o", "Linf": "C0-s", "L2": "C1-^", "L1": "C2-v", "union": "C3--D"}
    for threat in [t for t in THREAT_COLUMNS if t in set(points["threat"])]:
        group = points[points["threat"] == threat]
        ax.plot(
            group["position"],
            group["accuracy"] * 100,
            styles.get(threat, "-"),
            label=THREAT_COLUMNS.get(threat, threat),
            markersize=4,
        )
    lo, hi = points["position"].min(), points["position"].max()
    if lo < 0:
        ax.axvspan(lo, 0, color="0.92", zorder=0)
    if hi > 1:
        ax.axvspan(1, hi, color="0.92", zorder=0, label="extrapolation")
    ax.set_xlabel(f"w in (1 − w)·θ[{a}] + w·θ[{b}]")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Soups between {a} and {b}" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)
