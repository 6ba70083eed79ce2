"""The soups paper's table and figures, from the tidy shift metrics and the selection table, and the
soup-line figures (accuracy along (1 − w)·θ_A + w·θ_B, from the models' rows in ``metrics/all.tsv``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.collections import PatchCollection
from matplotlib.colors import Normalize
from matplotlib.patches import RegularPolygon
from matplotlib.ticker import FormatStrFormatter

from ..evaluate.mce import ALEXNET_ERRORS, MeanCorruptionError, mce_applies
from ..report.figures import save_figure
from ..report.labels import THREAT_ORDER, measurement_note, model_label, threat_eps, threat_label
from ..report.style import (
    THREAT_STYLE,
    TWO_COLUMNS,
    annotate_values,
    colour_range,
    footnote,
    house_style,
    legend_outside,
    palette,
    text_colour,
)


def shifts_table(
    metrics: pd.DataFrame,
    models: pd.DataFrame,
    selection: pd.DataFrame,
    evalsets: Sequence[str],
    dataset: str = "",
) -> pd.DataFrame:
    """Rows: base models, the best base model per shift (an oracle: chosen on held-out labels),
    ensembles, the single soup, and one row per (method, k) of shift-specific soups (each column
    uses the soup chosen for that shift). Label-free methods get rows at k = 100 and their largest
    k only, each followed by a "+ fallback" row: the pick where its safety signal holds, else the
    fallback base model. Columns: each shift, their mean, Δ grid (mean over shifts of the gap to
    grid search at the same k), Δ best base and worst Δ best base (mean and smallest gap to the
    best base model of each shift), the FLOPs multiple, the soup × image forward passes the choice
    used, and how many shifts fell back. Accuracy and gaps in %, points.

    A shift with several rows per model (ImageNet-C: one per corruption ×
    severity) shows their mean accuracy, followed, where ImageNet-C's mCE
    applies (``dataset`` imagenet, :func:`~robustsoup.evaluate.mce.mce_applies`),
    by ``<shift> mCE`` and ``<shift> relative mCE`` of the model in that
    column (percent, AlexNet = 100; the relative one against its ``clean``
    accuracy, so per-shift soups, tested on their own shift only, have none).
    """
    acc = metrics.pivot_table(index="model", columns="evalset", values="accuracy", aggfunc="mean") * 100
    rows = []
    for kind in ("base", "ensemble", "single"):
        for _, model in models[models["kind"] == kind].iterrows():
            row = {"row": model["model"], "kind": kind, "flops": f"{int(model['flops'])}×"}
            row["_source"] = dict.fromkeys(evalsets, model["model"])
            row.update({e: acc.loc[model["model"], e] for e in evalsets if e in acc.columns})
            if kind == "single":
                row["forward passes"] = int(selection[selection["method"] == "single"]["forward_passes"].sum())
            rows.append(row)
        if kind == "base":
            base = [m for m in models[models["kind"] == "base"]["model"] if m in acc.index]
            if base:
                best = {e: acc.loc[base, e].max() for e in evalsets if e in acc.columns}
                rows.append(
                    {
                        "row": "best base model per shift (oracle)",
                        "kind": "oracle",
                        "flops": "1×",
                        "_source": {},
                        **best,
                    }
                )
    label_free = selection["label_free"].fillna(0).astype(bool) if "label_free" in selection else None
    free_methods = set(selection.loc[label_free, "method"]) if label_free is not None else set()
    specific = models[models["kind"] == "specific"]
    free_ks = set(specific[specific["method"].isin(free_methods)]["k"])
    shown_ks = {k for k in free_ks if k == 100} | ({max(free_ks)} if free_ks else set())
    for method, k in specific[["method", "k"]].drop_duplicates().itertuples(index=False):
        free = method in free_methods
        if free and k not in shown_ks:
            continue
        label = f"per-shift soups ({method}, label-free, k={k})" if free else f"per-shift soups ({method}, k={k})"
        row = {"row": label, "kind": "label-free" if free else "specific", "flops": "1×", "k": k, "_source": {}}
        for evalset in evalsets:
            name = f"soup-{evalset}-{method}-k{k}"
            if name in acc.index:
                row[evalset] = acc.loc[name, evalset]
                row["_source"][evalset] = name
        chosen = selection[(selection["method"] == method) & (selection["k"] == k)]
        row["forward passes"] = int(chosen["forward_passes"].sum())
        rows.append(row)
        if free:
            rows.append(_fallback_row(row, chosen, acc, evalsets))
    table = pd.DataFrame(rows).set_index("row")
    present = [e for e in evalsets if e in table.columns]
    table.insert(table.columns.get_loc("flops"), "mean", table[present].mean(axis=1))
    _add_gaps(table, present)
    mce = _add_mce(table, metrics, present, dataset)
    extra = [c for c in ("forward passes", "fallbacks") if c in table]
    table = table[["kind", *present, "mean", *mce, "Δ grid", "Δ best base", "worst Δ best base", "flops", *extra]]
    table["forward passes"] = table.get("forward passes", pd.Series(dtype=float)).astype("Int64")
    return table.round(1)


def _fallback_row(row: dict, chosen: pd.DataFrame, acc: pd.DataFrame, evalsets: Sequence[str]) -> dict:
    """A label-free row with each shift's pick replaced by its fallback base model where the
    safety signal fired; forward passes add the fallback's choice on clean images (once)."""
    out = {**row, "row": row["row"].replace("label-free,", "label-free + fallback,"), "kind": "label-free+fallback"}
    out["_source"] = dict(row["_source"])
    fired = 0
    for _, pick in chosen.iterrows():
        evalset = pick["evalset"]
        if evalset in evalsets and pick["fallback"] == 1 and pick["fallback_model"] in acc.index:
            out[evalset] = acc.loc[pick["fallback_model"], evalset]
            out["_source"][evalset] = pick["fallback_model"]
            fired += 1
    out["fallbacks"] = f"{fired}/{len(chosen)}"
    out["forward passes"] = row["forward passes"] + int(chosen["fallback_passes"].max())
    return out


def _add_mce(table: pd.DataFrame, metrics: pd.DataFrame, evalsets: Sequence[str], dataset: str) -> list[str]:
    """``<shift> mCE`` and ``<shift> relative mCE`` of the model in each row's ``<shift>`` column, for every
    shift whose rows are ImageNet-C's corruptions × severities (see :func:`shifts_table`), in place;
    returns the added column names."""
    if not mce_applies(dataset):
        return []
    corrupted = metrics[(metrics["severity"] >= 1) & metrics["corruption"].isin(list(ALEXNET_ERRORS))]
    added = []
    for evalset in [e for e in evalsets if e in set(corrupted["evalset"])]:
        columns = MeanCorruptionError(evalset, "clean", dataset).run(metrics)
        for column in columns.columns:
            name = f"{evalset} {column}"
            table[name] = [
                columns.loc[source[evalset], column] if source.get(evalset) in columns.index else float("nan")
                for source in table["_source"]
            ]
            added.append(name)
    return added


def _add_gaps(table: pd.DataFrame, evalsets: Sequence[str]) -> None:
    """Δ grid, Δ best base and worst Δ best base (points) for every per-shift row, in place."""
    for column in ("Δ grid", "Δ best base", "worst Δ best base"):
        table[column] = float("nan")
    if "k" not in table:
        return
    oracle = table[table["kind"] == "oracle"]
    grid_rows = table[(table["kind"] == "specific") & table.index.str.startswith("per-shift soups (grid,")]
    for name, row in table[table["kind"].isin(["specific", "label-free", "label-free+fallback"])].iterrows():
        values = row[list(evalsets)].astype(float)
        grid = grid_rows[grid_rows["k"] == row["k"]]
        if len(grid):
            table.loc[name, "Δ grid"] = (values - grid.iloc[0][list(evalsets)].astype(float)).mean()
        if len(oracle):
            gap = values - oracle.iloc[0][list(evalsets)].astype(float)
            table.loc[name, "Δ best base"] = gap.mean()
            table.loc[name, "worst Δ best base"] = gap.min()


# How the figures name the soup-selection methods of soups.search.methods.
METHOD_NAMES = {
    "grid": "grid search",
    "halving": "successive halving",
    "greedy": "greedy soup",
    "learned": "learned weights",
}


def plot_composition(selection: pd.DataFrame, base_models: Sequence[str], path, method: str = "grid") -> list[Path]:
    """Stacked bars: the weights of the soup chosen for each shift (largest k), and the single soup.

    Each segment is labelled with its weight; negative weights (extrapolation) stack below zero.
    """
    k = selection[selection["method"] == method]["k"].max()
    chosen = selection[((selection["method"] == method) & (selection["k"] == k)) | (selection["method"] == "single")]
    labels = [r["evalset"] if r["method"] != "single" else "single soup\n(all shifts)" for _, r in chosen.iterrows()]
    weights = np.array([[json.loads(r["weights"]).get(m, 0.0) for m in base_models] for _, r in chosen.iterrows()])
    colours = palette(len(base_models))
    with house_style():
        fig, ax = plt.subplots(figsize=(TWO_COLUMNS, 3.0))
        x = np.arange(len(labels), dtype=float)
        single = [i for i, (_, r) in enumerate(chosen.iterrows()) if r["method"] == "single"]
        x[single] += 0.5  # a gap before the soup chosen for every shift at once
        positive = np.zeros(len(labels))
        negative = np.zeros(len(labels))
        for j, model in enumerate(base_models):
            column = weights[:, j]
            bottom = np.where(column >= 0, positive, negative)
            bars = ax.bar(
                x, column, bottom=bottom, width=0.7, label=model_label(model), color=colours[j], edgecolor="white"
            )
            for bar, value in zip(bars, column):
                if abs(value) >= 0.08:
                    ax.text(
                        bar.get_x() + bar.get_width() / 2,
                        bar.get_y() + bar.get_height() / 2,
                        f"{value:.2g}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=text_colour(colours[j]),
                    )
            positive += np.clip(column, 0, None)
            negative += np.clip(column, None, 0)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks(x, labels)
        ax.set_xlabel("distribution shift the soup was chosen for")
        ax.set_ylabel("weight in the soup")
        ax.grid(axis="x", visible=False)
        legend_outside(ax, title="base model")
        method_text = METHOD_NAMES.get(method, method)
        ax.set_title(f"Soup chosen per shift ({method_text}, k={k} adaptation images)")
    caption = (
        f"Weights of the soup chosen for each distribution shift by {method_text} on its first k={k} "
        "adaptation images, and of the single soup chosen for all shifts at once (right). Segments are "
        "labelled with their weight (weights sum to 1; a negative weight, stacked below zero, extrapolates "
        "beyond a model). The counterpart of the soups paper's composition figure (Croce et al. 2023)."
    )
    return save_figure(fig, path, "Composition of the soup chosen per distribution shift", caption)


def _hexagon_radius(xy: np.ndarray) -> float:
    """Circumradius of hexagons that tile a triangular lattice: the spacing / √3."""
    if len(xy) < 2:
        return 0.1
    distances = np.sqrt(((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1))
    spacing = distances[distances > 1e-9].min()
    return float(spacing / np.sqrt(3))


def plot_ternary(table: pd.DataFrame, corners: Sequence[str], path) -> list[Path]:
    """Heat maps over the triangle of soups of three models: clean, each norm and union accuracy.

    One panel per threat, each soup a hexagon labelled with its accuracy (%, one decimal, in
    black or white by the cell's colour). Each panel has its own colour scale, the data's min
    to max, so that a spread of one percentage point is as visible as one of fifty.
    """
    threats = [t for t in THREAT_ORDER if t in set(table["threat"])]
    vertices = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])
    short = [model_label(c, short=True) for c in corners]
    columns = 3 if len(threats) > 3 else len(threats)
    rows_n = int(np.ceil((len(threats) + 1) / columns)) if len(threats) > 3 else 1
    with house_style():
        fig, axes = plt.subplots(rows_n, columns, figsize=(TWO_COLUMNS, 2.45 * rows_n), squeeze=False)
        flat = axes.ravel()
        radius = None
        for ax, threat in zip(flat, threats):
            rows = table[table["threat"] == threat]
            xy = rows[list(corners)].to_numpy(dtype=float) @ vertices
            radius = radius or _hexagon_radius(xy)
            values = rows["accuracy"].to_numpy(dtype=float) * 100
            vmin, vmax = colour_range(values)
            cmap, norm = plt.get_cmap("viridis"), Normalize(vmin, vmax)
            cells = PatchCollection(
                [RegularPolygon((x, y), 6, radius=radius) for x, y in xy],
                cmap=cmap,
                norm=norm,
                edgecolor="white",
                linewidth=0.8,
            )
            cells.set_array(values)
            ax.add_collection(cells)
            annotate_values(ax, xy, values, cmap, norm, fontsize=6.5)
            for (x, y), name in zip(vertices, short):
                above = y > 0
                ax.text(
                    x,
                    y + (radius + 0.04 if above else -(radius + 0.04)),
                    name,
                    ha="center",
                    va="bottom" if above else "top",
                    fontsize=8,
                    fontweight="bold",
                )
            ax.set_xlim(-radius - 0.08, 1 + radius + 0.08)
            ax.set_ylim(-radius - 0.2, np.sqrt(3) / 2 + radius + 0.2)
            ax.set_aspect("equal")
            ax.axis("off")
            ax.set_title(threat_label(threat, threat_eps(table, threat)), fontsize=9, pad=2)
            bar = fig.colorbar(cells, ax=ax, shrink=0.75, pad=0.0, aspect=15)
            bar.ax.tick_params(labelsize=7)
            bar.ax.yaxis.set_major_formatter(FormatStrFormatter("%.1f" if vmax - vmin < 5 else "%.0f"))
        for ax in flat[len(threats) :]:
            ax.axis("off")
        if len(flat) > len(threats):
            key = "\n".join(f"{s}: {model_label(c)}" for s, c in zip(short, corners))
            flat[len(threats)].text(
                0.05,
                0.6,
                "Corners (weight 1):\n" + key + "\n\naccuracy in %;\ncolour scale per panel",
                ha="left",
                va="center",
                fontsize=8,
                transform=flat[len(threats)].transAxes,
            )
        footnote(fig, measurement_note(table, with_threats=True))
    step = 1 / max(1, round(1 / (radius * np.sqrt(3)))) if radius else float("nan")
    caption = (
        f"Accuracy (%) of the soups w₁·θ[{short[0]}] + w₂·θ[{short[1]}] + w₃·θ[{short[2]}] (weights ≥ 0, "
        f"summing to 1, step {step:g}) of the {_and(model_label(c) for c in corners)}: clean, under each "
        "norm's attack and union (correct clean and under every attack). A corner is one model alone, an edge a "
        f"soup of two. {measurement_note(table, with_threats=True)}. Each panel has its own colour scale (its data's range), "
        "so compare panels by the printed numbers. The counterpart of the soups paper's ternary plots "
        "(Croce et al. 2023)."
    )
    return save_figure(fig, path, "Soups of three fine-tunes: accuracy over the triangle", caption)


def _and(names) -> str:
    """``a, b and c``."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


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
