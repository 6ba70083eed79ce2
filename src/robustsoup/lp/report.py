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
from ..report.labels import NO_EPS, THREAT_NAMES, THREAT_ORDER, measurement_note, model_label, threat_eps, threat_label
from ..report.style import THREAT_STYLE, footnote, house_style, legend_outside
from ..report.tables import THREAT_COLUMNS

# Threat of a tidy row → its column in the accuracy table. Clean accuracy comes twice: on the whole
# test split (N images) and on the n attacked images that the robust and union columns also count.
ACCURACY_COLUMNS = THREAT_COLUMNS


def accuracy_table(metrics: pd.DataFrame, model_order: Sequence[str], grid: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per model (in ``model_order``), one column per threat (:data:`ACCURACY_COLUMNS`, a norm's with
    its ε as the figures' legends say it: ``L∞, ε=0.1``), accuracy in percent.

    Clean accuracy appears on the whole test split (``clean (all N)``) and on
    the attacked images (``clean (attacked n)``, the clean number AutoAttack
    reports next to robust accuracy), when the rows hold both. Soups get a
    ``weights`` column from ``grid`` (``soups/grid.tsv``); every evaluated
    model appears, models not in ``model_order`` last.
    """
    clean = metrics[metrics["corruption"] == "none"]
    wide = clean.pivot_table(index="model", columns="threat", values="accuracy", aggfunc="first") * 100
    columns = [t for t in ACCURACY_COLUMNS if t in wide.columns]
    names = {t: ACCURACY_COLUMNS[t] if t in NO_EPS else threat_label(t, threat_eps(clean, t)) for t in columns}
    wide = wide[columns].rename(columns=names)
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
        norms = "+".join(THREAT_NAMES.get(n, n) for n in record.get("norms") or []) or "clean"
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
    """Accuracy along the line (1 − w)·θ_a + w·θ_b: columns position, threat, accuracy, n, eps, attack.

    The end points are the base models ``a`` (w = 0) and ``b`` (w = 1).
    """
    on_line = grid[grid["line"] == f"{a}~{b}"][["id", "position"]]
    positions = pd.concat(
        [on_line.rename(columns={"id": "model"}), pd.DataFrame({"model": [a, b], "position": [0.0, 1.0]})]
    )
    rows = metrics[metrics["corruption"] == "none"].merge(positions, on="model")
    columns = ["position", "threat", "accuracy", "n"] + [c for c in ("eps", "attack") if c in rows.columns]
    return rows[columns].sort_values("position")


def plot_soup_line(points: pd.DataFrame, a: str, b: str, path: str | Path, subtitle: str = "") -> list[Path]:
    """Accuracy (%) against w for every threat (clean, each norm with its ε, union); write ``path``
    (.png), its .pdf twin and its .html page.

    The y-axis spans 0–100 % in every soup-line figure, so the lines of one run compare at a glance;
    the end points are named under w = 0 and w = 1, extrapolation (w < 0, w > 1) is shaded.
    """
    name_a, name_b = model_label(a), model_label(b)
    threats = [t for t in THREAT_ORDER if t in set(points["threat"])]
    positions = sorted(set(points["position"]))
    with house_style():
        fig, ax = plt.subplots(figsize=(5.6, 3.1))
        lo, hi = min(positions), max(positions)
        if lo < 0:
            ax.axvspan(lo - 0.05, 0, color="0.93", zorder=0, lw=0)
        if hi > 1:
            ax.axvspan(1, hi + 0.05, color="0.93", zorder=0, lw=0)
        for threat in threats:
            group = points[points["threat"] == threat].sort_values("position")
            ax.plot(
                group["position"],
                group["accuracy"] * 100,
                label=threat_label(threat, threat_eps(points, threat)),
                **THREAT_STYLE.get(threat, {}),
            )
        handles, labels = ax.get_legend_handles_labels()
        if lo < 0 or hi > 1:
            handles.append(plt.Rectangle((0, 0), 1, 1, color="0.93"))
            labels.append("extrapolation")
        legend_outside(ax, handles, labels, title="threat model")
        ax.set_xlim(lo - 0.05, hi + 0.05)
        ax.set_ylim(0, 101)
        ax.set_xticks(positions, [_position_label(w, a, b) for w in positions])
        ax.set_xlabel(f"w in the soup (1 − w)·{model_label(a, short=True)} + w·{model_label(b, short=True)}")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(f"Soups between the {name_a} and the {name_b}")
        measured = measurement_note(points) or subtitle
        footnote(fig, measured)
    caption = (
        f"Clean and robust accuracy of the soups (1 − w)·θ[{name_a}] + w·θ[{name_b}] against w: w = 0 is the "
        f"{name_a}, w = 1 the {name_b}; shaded w < 0 or w > 1 extrapolate beyond them. Robust accuracy per "
        "norm at the ε in the legend; union counts an image only if it is classified correctly clean and "
        f"under every norm's attack. {measured}. The counterpart of the soups paper's Fig. 2 "
        "(Croce et al. 2023): the weight trades one kind of robustness for another without retraining."
    )
    return save_figure(fig, path, f"Soups between the {name_a} and the {name_b}", caption)


def _position_label(w: float, a: str, b: str) -> str:
    """``0`` → ``0\nL∞``, ``1`` → ``1\nL∞→L2``, others as numbers: the ends carry their model's name."""
    text = f"{w:g}".replace("-", "−")
    if w == 0:
        return f"{text}\n{model_label(a, short=True)}"
    if w == 1:
        return f"{text}\n{model_label(b, short=True)}"
    return f"{text}\n "  # two lines like the ends, so that every number sits at the same height
