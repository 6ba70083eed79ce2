"""The robust-distillation table: accuracy on clean and corrupted data, and what each model cost.

Rows: the teacher, the original student, full fine-tuning, and the
multi-head student under each head-selection rule. Columns: clean accuracy,
mean corruption accuracy (over every corruption × severity), the mean of each
corruption family, then parameters tuned and training time read from the
checkpoints' sidecars. Nothing here computes a metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..data.corruptions import FAMILIES
from ..evaluate.shifts import FAMILY_ORDER
from ..report.figures import save_figure
from ..report.style import TWO_COLUMNS, footnote, house_style
from ..report.tables import write_table
from .captions import DISTILL_REPORT
from .config import CALIBRATION_LABELS

BASE_ORDER = ("teacher", "student", "student-finetuned")


def distill_table(metrics: pd.DataFrame, metas: Mapping, multihead_names: Sequence[str]) -> pd.DataFrame:
    """One row per model and head rule (accuracy in %), with parameters and training time.

    ``metas`` maps checkpoint names to sidecars (:class:`robustsoup.checkpoint.CheckpointMeta`);
    the rows ``student-multihead-<rule>`` share the ``student-multihead`` checkpoint.
    """
    order = [m for m in (*BASE_ORDER, *multihead_names) if m in set(metrics["model"])]
    rows = []
    for model in order:
        own = metrics[metrics["model"] == model]
        clean = own[own["corruption"] == "none"]
        shifted = own[own["corruption"] != "none"]
        row = {
            "model": model,
            "rule": clean["attack"].iloc[0] if model.startswith("student-multihead") else "",
            "clean": clean["accuracy"].mean() * 100,
            "corruptions": shifted["accuracy"].mean() * 100,
        }
        families = shifted["corruption"].map(FAMILIES)
        for family in FAMILY_ORDER:
            part = shifted[families == family]
            if len(part):
                row[family] = part["accuracy"].mean() * 100
        meta = metas.get("student-multihead" if model.startswith("student-multihead") else model)
        measured = meta.metrics if meta is not None else {}
        row["trainable params"] = measured.get("trainable_parameters")
        row["params"] = measured.get("parameters")
        row["train time (s)"] = measured.get("train_seconds")
        row["train CPU (s)"] = measured.get("train_cpu_seconds")
        rows.append(row)
    table = pd.DataFrame(rows).set_index("model")
    for column in ("trainable params", "params"):
        table[column] = pd.array(table[column], dtype="Int64")
    cost = ("trainable params", "params", "train time (s)", "train CPU (s)")
    accuracy = [c for c in table.columns if c not in ("rule", *cost)]
    table[accuracy] = table[accuracy].astype(float).round(1)
    for column in cost[2:]:
        table[column] = table[column].astype(float).round(1)
    return table


def cost_sentence(metas: Mapping) -> str:
    """Distillation against full fine-tuning: parameters tuned and training time."""
    multihead, finetuned, teacher = (metas.get(n) for n in ("student-multihead", "student-finetuned", "teacher"))
    if multihead is None or finetuned is None:
        return ""
    m, f = multihead.metrics, finetuned.metrics
    key = "train_cpu_seconds" if "train_cpu_seconds" in m and "train_cpu_seconds" in f else "train_seconds"
    what = "CPU time" if key == "train_cpu_seconds" else "time"
    text = (
        f"Distillation tunes {m['trainable_parameters']:,} of {m['parameters']:,} parameters "
        f"({m['trainable_parameters'] / m['parameters']:.0%}) in {m[key]:.1f} s of {what}; full fine-tuning "
        f"tunes all {f['trainable_parameters']:,} in {f[key]:.1f} s ({what} ratio {m[key] / f[key]:.2f})"
    )
    if teacher is not None and key in teacher.metrics:
        text += f"; training the teacher took {teacher.metrics[key]:.1f} s"
    return text + (
        ". Train time is wall-clock, CPU time the job's own (robust to other jobs sharing the machine)"
        if key == "train_cpu_seconds"
        else ""
    )


def write_distill_table(
    table: pd.DataFrame, metas: Mapping, summaries: Sequence[Mapping], stem: str | Path, dataset: str
) -> list[Path]:
    """Write ``stem.csv`` and ``stem.md`` with a note on the evaluation and the cost comparison."""
    n_clean = sorted({s["n_clean"] for s in summaries})
    n_shifted = sorted({s["n_per_corrupted_set"] for s in summaries})
    first = summaries[0] if summaries else {"corruptions": [], "severities": []}
    note = (
        f"Clean: {'/'.join(map(str, n_clean))} test images; corruptions: mean over "
        f"{len(first['corruptions'])} corruptions × {len(first['severities'])} "
        f"{'severity' if len(first['severities']) == 1 else 'severities'} on the first "
        f"{'/'.join(map(str, n_shifted))} test images each, families the mean of their corruptions. "
        "Trainable params and train time: teacher and student from scratch; student-finetuned and "
        "student-multihead start from the trained student (not counted)"
    )
    cost = cost_sentence(metas)
    if cost:
        note += ". " + cost
    multihead = next((s for s in summaries if "thresholds" in s), None)
    if multihead is not None:
        t = multihead["thresholds"]

        def shown(value):
            return "always" if value is None else f"{value:.3g}"

        usage = multihead["head_usage"][multihead["rule"]]
        note += (
            f". Rule {multihead['rule']}: θ_u {shown(t['uncertainty'])} ({multihead['uncertainty']}, "
            f"T={multihead['mc_samples']}), θ_kl {shown(t['divergence'])}, chosen on the adaptation split"
            + (f" ({CALIBRATION_LABELS[t['calibration']]})" if t.get("calibration") in CALIBRATION_LABELS else "")
            + "; "
            "heads used (clean/robust/combined) on clean test images "
            + "/".join(f"{usage['clean'][h]:.0%}" for h in ("clean", "robust", "combined"))
            + ", on corrupted ones "
            + "/".join(f"{usage['corrupted'][h]:.0%}" for h in ("clean", "robust", "combined"))
        )
    return write_table(table, stem, f"Robust distillation on {dataset}", note, DISTILL_REPORT.caption("distill"))


# --------------------------------------------------------------------------- figure


def model_name(model: str, rule: str = "") -> str:
    """A reader's name for a row of the distillation table."""
    names = {
        "teacher": "robust teacher",
        "student": "student (normal training)",
        "student-finetuned": "student, full fine-tune",
    }
    if model in names:
        return names[model]
    return f"multi-head, rule {rule or model.removeprefix('student-multihead-')}"


def plot_distill(table: pd.DataFrame, path: str | Path) -> list[Path]:
    """Accuracy of each model (a dot per measure: clean, mean over corruptions, each family) beside
    what it cost to train: the robust-distillation table at a glance.

    ``table`` is :func:`distill_table`'s; write ``path`` (.png), its .pdf twin and its .html page.
    """
    rows = list(table.index)[::-1]  # first row on top
    names = [model_name(m, table.loc[m, "rule"] if "rule" in table else "") for m in rows]
    families = [f for f in FAMILY_ORDER if f in table.columns]
    y = np.arange(len(rows))
    time_column = (
        "train CPU (s)" if table.get("train CPU (s)", pd.Series(dtype=float)).notna().any() else "train time (s)"
    )
    # Family dots in colours unlike the mean's vermillion; clean and mean hollow, so a dot under them shows.
    family_colours = dict(zip(FAMILY_ORDER, ("#0072B2", "#E69F00", "#009E73", "#CC79A7")))
    with house_style():
        fig, (ax, cost) = plt.subplots(
            1, 2, figsize=(TWO_COLUMNS, 0.3 * len(rows) + 1.5), sharey=True, width_ratios=(3, 1)
        )
        for family in families:
            ax.scatter(
                table.loc[rows, family], y, s=20, color=family_colours.get(family, "0.5"), label=family, zorder=2
            )
        ax.scatter(
            table.loc[rows, "corruptions"],
            y,
            s=55,
            marker="D",
            facecolors="none",
            edgecolors="#D55E00",
            linewidths=1.6,
            label="mean over corruptions",
            zorder=3,
        )
        ax.scatter(
            table.loc[rows, "clean"],
            y,
            s=55,
            marker="s",
            facecolors="none",
            edgecolors="black",
            linewidths=1.6,
            label="clean",
            zorder=3,
        )
        ax.set_yticks(y, names)
        ax.set_xlabel("accuracy (%)")
        ax.grid(axis="y", visible=False)
        ax.set_title("Accuracy")
        seconds = table.loc[rows, time_column].astype(float)
        cost.barh(y, seconds.fillna(0), color="#56B4E9", height=0.6)
        for yi, value in zip(y, seconds):
            if np.isfinite(value):
                cost.text(value, yi, f" {value:.1f}", va="center", fontsize=7)
        cost.set_xlabel(time_column.replace("train ", "training "))
        cost.set_title("Training cost")
        cost.grid(axis="y", visible=False)
        cost.set_xlim(0, (seconds.max() if seconds.notna().any() else 1) * 1.35)
        handles, labels = ax.get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncol=3, frameon=False)
        footnote(
            fig,
            "cost of the fine-tune and the multi-head student: their own training only (both start from the "
            "trained student); the multi-head rows share one checkpoint, so one cost",
        )
    caption = (
        "Robust distillation (Jain et al. 2023) at a glance, from the distillation table: for each model, clean "
        "accuracy (square), the mean over every corruption and severity (diamond) and the mean of each "
        f"corruption family (dots), beside its training {'CPU ' if 'CPU' in time_column else ''}time. The "
        "multi-head student tunes only its last block and heads, distilled from the robust teacher; the "
        "full fine-tune is the cost baseline. The table holds the numbers, image counts and thresholds."
    )
    return save_figure(fig, path, "Robust distillation: accuracy and cost per model", caption)
