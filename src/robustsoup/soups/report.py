"""The soups paper's table and figures, from the tidy shift metrics and the selection table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..report.figures import save_figure
from ..report.tables import THREAT_COLUMNS


def shifts_table(
    metrics: pd.DataFrame, models: pd.DataFrame, selection: pd.DataFrame, evalsets: Sequence[str]
) -> pd.DataFrame:
    """Rows: base models, ensembles, the single soup, and one row per (method, k) of
    shift-specific soups (each column uses the soup chosen for that shift); columns: each
    shift, their mean, the FLOPs multiple, and the soup × image forward passes the choice used.
    Accuracy in %."""
    acc = metrics.pivot_table(index="model", columns="evalset", values="accuracy", aggfunc="first") * 100
    rows = []
    for kind in ("base", "ensemble", "single"):
        for _, model in models[models["kind"] == kind].iterrows():
            row = {"row": model["model"], "kind": kind, "flops": f"{int(model['flops'])}×"}
            row.update({e: acc.loc[model["model"], e] for e in evalsets if e in acc.columns})
            if kind == "single":
                row["forward passes"] = int(selection[selection["method"] == "single"]["forward_passes"].sum())
            rows.append(row)
    specific = models[models["kind"] == "specific"]
    for method, k in specific[["method", "k"]].drop_duplicates().itertuples(index=False):
        row = {"row": f"per-shift soups ({method}, k={k})", "kind": "specific", "flops": "1×"}
        for evalset in evalsets:
            name = f"soup-{evalset}-{method}-k{k}"
            if name in acc.index:
                row[evalset] = acc.loc[name, evalset]
        chosen = selection[(selection["method"] == method) & (selection["k"] == k)]
        row["forward passes"] = int(chosen["forward_passes"].sum())
        rows.append(row)
    table = pd.DataFrame(rows).set_index("row")
    present = [e for e in evalsets if e in table.columns]
    table.insert(table.columns.get_loc("flops"), "mean", table[present].mean(axis=1))
    table = table[["kind", *present, "mean", "flops", *(["forward passes"] if "forward passes" in table else [])]]
    table["forward passes"] = table.get("forward passes", pd.Series(dtype=float)).astype("Int64")
    return table.round(1)


def plot_composition(selection: pd.DataFrame, base_models: Sequence[str], path, method: str = "grid") -> list[Path]:
    """Stacked bars: the weights of the soup chosen for each shift (largest k), and the single soup."""
    k = selection[selection["method"] == method]["k"].max()
    chosen = selection[((selection["method"] == method) & (selection["k"] == k)) | (selection["method"] == "single")]
    labels = [r["evalset"] if r["method"] != "single" else "single soup" for _, r in chosen.iterrows()]
    weights = np.array([[json.loads(r["weights"]).get(m, 0.0) for m in base_models] for _, r in chosen.iterrows()])
    fig, ax = plt.subplots(figsize=(6.5, 3.8), dpi=150)
    positive = np.zeros(len(labels))
    negative = np.zeros(len(labels))
    for j, model in enumerate(base_models):
        column = weights[:, j]
        bottom = np.where(column >= 0, positive, negative)
        ax.bar(labels, column, bottom=bottom, label=model, color=f"C{j}")
        positive += np.clip(column, 0, None)
        negative += np.clip(column, None, 0)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylabel("weight in the soup")
    ax.set_title(f"Composition of the chosen soup per shift ({method}, k={k})", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_ternary(table: pd.DataFrame, corners: Sequence[str], path) -> list[Path]:
    """Heat maps over the triangle of three models: clean, each norm and union accuracy."""
    threats = [t for t in THREAT_COLUMNS if t in set(table["threat"])]
    fig, axes = plt.subplots(1, len(threats), figsize=(2.6 * len(threats), 2.7), dpi=150)
    axes = np.atleast_1d(axes)
    vertices = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    for ax, threat in zip(axes, threats):
        rows = table[table["threat"] == threat]
        xy = rows[list(corners)].to_numpy() @ vertices
        scatter = ax.scatter(xy[:, 0], xy[:, 1], c=rows["accuracy"] * 100, cmap="viridis", s=90, marker="h")
        for (x, y), value in zip(xy, rows["accuracy"] * 100):
            ax.annotate(f"{value:.0f}", (x, y), ha="center", va="center", fontsize=5, color="w")
        ax.plot(*np.vstack([vertices, vertices[:1]]).T, color="0.5", lw=0.6)
        for (x, y), name in zip(vertices, corners):
            ax.annotate(
                name, (x, y), textcoords="offset points", xytext=(0, -9 if y == 0 else 4), ha="center", fontsize=6
            )
        ax.set_title(THREAT_COLUMNS[threat], fontsize=8)
        ax.set_aspect("equal")
        ax.axis("off")
        fig.colorbar(scatter, ax=ax, shrink=0.6).ax.tick_params(labelsize=6)
    fig.suptitle("Soups of " + ", ".join(corners) + " (accuracy %)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
