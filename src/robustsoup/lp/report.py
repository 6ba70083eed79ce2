"""Robust fine-tuning's report: the accuracy table (the robust-finetuning paper's columns: clean,
per-norm and union accuracy, what each model was trained for and its cost). The soup-line figures are
the soups study's (:mod:`robustsoup.soups.report`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from ..report.labels import NO_EPS, THREAT_NAMES, threat_eps, threat_label
from ..report.tables import THREAT_COLUMNS

# Threat of a tidy row → its column in the accuracy table. Clean accuracy comes twice: on the whole
# test split (N images) and on the n attacked images that the robust and union columns also count.
ACCURACY_COLUMNS = THREAT_COLUMNS


def accuracy_table(
    metrics: pd.DataFrame, model_order: Sequence[str], mixtures: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """One row per model (in ``model_order``), one column per threat (:data:`ACCURACY_COLUMNS`, a norm's with
    its ε as the figures' legends say it: ``L∞, ε=0.1``), accuracy in percent.

    Clean accuracy appears on the whole test split (``clean (all N)``) and on
    the attacked images (``clean (attacked n)``, the clean number AutoAttack
    reports next to robust accuracy), when the rows hold both. Soups get a
    ``weights`` column from ``mixtures`` ({soup id: its weights as text}, the
    soup grid's, handed in by the workflow); every evaluated model appears,
    models not in ``model_order`` last.
    """
    clean = metrics[metrics["corruption"] == "none"]
    wide = clean.pivot_table(index="model", columns="threat", values="accuracy", aggfunc="first") * 100
    columns = [t for t in ACCURACY_COLUMNS if t in wide.columns]
    names = {t: ACCURACY_COLUMNS[t] if t in NO_EPS else threat_label(t, threat_eps(clean, t)) for t in columns}
    wide = wide[columns].rename(columns=names)
    order = [m for m in model_order if m in wide.index] + sorted(m for m in wide.index if m not in model_order)
    wide = wide.loc[order]
    wide.insert(0, "weights", "")
    for soup, text in (mixtures or {}).items():
        if soup in wide.index:
            wide.loc[soup, "weights"] = text
    wide.index.name = "model"
    return wide.round(1)


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
