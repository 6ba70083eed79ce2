"""Tables from tidy metric rows: CSV and Markdown, never recomputing a number."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from ..io import write_text_atomic

THREAT_COLUMNS = {"none": "clean", "Linf": "Linf", "L2": "L2", "L1": "L1", "union": "union"}


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


def add_training_columns(table: pd.DataFrame, trainings: dict[str, dict | None], parents: dict[str, str | None]) -> pd.DataFrame:
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


def attack_summary(metrics: pd.DataFrame) -> str:
    """A short line for a figure: the attacks and how many images they saw."""
    attacked = metrics[~metrics["threat"].isin(["none"])]
    attacks = "/".join(sorted(set(attacked["attack"])))
    sizes = "/".join(map(str, sorted(set(attacked["n"]))))
    return f"robust accuracy: {attacks}, n={sizes}" if attacks else ""


def evaluation_note(metrics: pd.DataFrame) -> str:
    """A sentence saying on how many images and with which attack the numbers were measured."""
    parts = []
    for threat, group in metrics.groupby("threat", sort=False):
        sizes = sorted(set(group["n"]))
        attacks = sorted(set(group["attack"]))
        eps = sorted(set(group["eps"]))
        eps_text = f" ε={'/'.join(f'{e:g}' for e in eps)}" if threat not in ("none", "union") else ""
        parts.append(f"{THREAT_COLUMNS.get(threat, threat)}{eps_text}: n={'/'.join(map(str, sizes))}, "
                     f"{'/'.join(attacks)}")
    return "; ".join(parts)


def to_markdown(table: pd.DataFrame, title: str, note: str) -> str:
    """A GitHub-flavoured Markdown table with a title and a note under it."""
    header = ["model", *table.columns]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        cells = [str(name)] + ["" if pd.isna(v) else f"{v:.1f}" if isinstance(v, float) else str(v)
                               for v in row.values]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Accuracy in %. {note}.", ""]
    return "\n".join(lines)


def write_table(table: pd.DataFrame, stem: str | Path, title: str, note: str) -> list[Path]:
    """Write ``stem.csv`` and ``stem.md`` atomically; return both paths."""
    stem = Path(stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text_atomic(csv_path, table.to_csv())
    write_text_atomic(md_path, to_markdown(table, title, note))
    return [csv_path, md_path]
