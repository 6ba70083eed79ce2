"""Evaluation: clean, per-norm robust and union accuracy as tidy metric rows.

Every measurement is one row of :data:`METRIC_COLUMNS`; tables and figures
are built from these rows only. Robust accuracy is per point, so union
accuracy (correct clean and under every norm's attack) is counted, not
approximated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from .attacks import AttackPlan, robust_correct
from .data import ImageSplit
from .data.loading import BatchSource, batch_source
from .io import write_text_atomic

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "model",
    "evalset",
    "corruption",
    "severity",
    "threat",
    "eps",
    "attack",
    "n",
    "correct",
    "accuracy",
]
# Threat of the row of clean accuracy on the attacked images only (the ``none`` row covers the whole split).
CLEAN_ON_ATTACKED = "none@attacked"


@torch.no_grad()
def clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per-point clean correctness, bool (N,)."""
    return torch.cat(
        [model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size] for i in range(0, len(x), batch_size)]
    )


def metric_row(
    model: str,
    evalset: str,
    correct: torch.Tensor,
    *,
    threat: str = "none",
    eps: float = 0.0,
    attack: str = "clean",
    corruption: str = "none",
    severity: int = 0,
) -> dict:
    """One tidy metric row (the columns of :data:`METRIC_COLUMNS`) from per-point correctness."""
    n, hits = int(correct.numel()), int(correct.sum())
    return {
        "model": model,
        "evalset": evalset,
        "corruption": corruption,
        "severity": int(severity),
        "threat": threat,
        "eps": eps,
        "attack": attack,
        "n": n,
        "correct": hits,
        "accuracy": hits / n if n else float("nan"),
    }


def _points(labels: torch.Tensor, correct: torch.Tensor) -> pd.DataFrame:
    return pd.DataFrame(
        {"index": range(len(labels)), "label": labels.cpu().numpy(), "correct": correct.cpu().numpy().astype(int)}
    )


def evaluate_clean(
    model: nn.Module, model_name: str, data: ImageSplit | BatchSource, device="cpu", batch_size: int = 500
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean accuracy on all of ``data`` (a split, or a batch source over one): (one tidy row, per-point
    correctness).

    Batches come from a :class:`~robustsoup.data.loading.BatchSource`, as training's do (a decoded split
    held on the GPU, a file list decoded by the loader's workers), so no split is ever held in float32."""
    model = model.to(device).eval()
    source = batch_source(data, device)
    hits = []
    with torch.no_grad():
        for _idx, x, y in source.batches(torch.arange(len(source)), batch_size):
            hits.append(model(x.float().div_(255.0)).argmax(1) == y)
    correct = torch.cat(hits) if hits else torch.zeros(0, dtype=torch.bool)
    row = metric_row(model_name, source.split.split, correct)
    return pd.DataFrame([row], columns=METRIC_COLUMNS), _points(source.split.labels, correct)


def evaluate_adversarial(
    model: nn.Module,
    model_name: str,
    data: ImageSplit | BatchSource,
    norm: str,
    eps: float,
    plan: AttackPlan,
    n_attacked: int,
    seed: int = 0,
    batch_size: int = 250,
    device="cpu",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Robust accuracy under ``plan`` in the ``norm`` ε-ball on the first ``n_attacked`` images.

    Returns one tidy row and the per-point robust correctness (a point is
    robust only if it is also correct clean). ε is in [0,1] pixel space.
    """
    model = model.to(device).eval()
    source = batch_source(data, device)
    x, y = source.first(n_attacked)
    start = time.perf_counter()
    robust = robust_correct(model, x, y, norm, eps, plan, seed=seed, batch_size=batch_size)
    log.info(
        "%s %s ε=%g: robust accuracy %.4f on %d images with %s (%.1fs)",
        model_name,
        norm,
        eps,
        robust.float().mean().item(),
        len(y),
        plan.name,
        time.perf_counter() - start,
    )
    row = metric_row(model_name, source.split.split, robust, threat=norm, eps=eps, attack=plan.name)
    return pd.DataFrame([row], columns=METRIC_COLUMNS), _points(y, robust)


def evaluate_threats(
    model: nn.Module,
    model_name: str,
    data: ImageSplit,
    eps: Mapping[str, float],
    plans: Mapping[str, AttackPlan],
    n_attacked: int,
    seed: int = 0,
    batch_size: int = 250,
    device="cpu",
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Clean accuracy, then robust accuracy under every norm of ``plans`` (ε from ``eps``) on the first
    ``n_attacked`` images: ``{"clean": (row, points), norm: (row, points), …}`` in that order; one
    batch source serves them all."""
    data = batch_source(data, device)
    results = {"clean": evaluate_clean(model, model_name, data, device)}
    for norm, plan in plans.items():
        results[norm] = evaluate_adversarial(
            model, model_name, data, norm, eps[norm], plan, n_attacked, seed=seed, batch_size=batch_size, device=device
        )
    return results


def union_rows(
    model_name: str, evalset: str, points: Mapping[str, pd.DataFrame], attacks: Mapping[str, str]
) -> pd.DataFrame:
    """Rows counted over the attacked images from per-point results: clean accuracy on them
    (threat :data:`CLEAN_ON_ATTACKED`) and, with two norms or more, union accuracy (threat ``union``:
    correct clean and robust under every norm).

    ``points`` maps ``none`` (clean, usually the whole split) and each norm to
    its per-point table; the attacked images are the prefix every norm
    attacked. The clean row on them is what AutoAttack and robust-finetuning's
    eval.py report as clean accuracy (measured on the same points as the
    robust ones); the ``none`` row of the whole split stays as it is.
    """
    norms = [t for t in points if t != "none"]
    if not norms:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    n = min(len(points[t]) for t in norms)
    reference = points[norms[0]].iloc[:n]
    for threat, table in points.items():
        head = table.iloc[:n]
        if len(head) < n:
            raise ValueError(
                f"{model_name}: the per-point file of {threat} lists {len(head)} images; "
                f"{norms[0]} attacked {n}. Evaluate {threat} on all of them again."
            )
        for column in ("index", "label"):
            if not (head[column].to_numpy() == reference[column].to_numpy()).all():
                raise ValueError(
                    f"{model_name}: per-point files of {threat} and {norms[0]} list other images "
                    f"(column {column!r} differs within the first {n}); evaluate them on the same split again."
                )
    correct = {t: torch.from_numpy(table["correct"].to_numpy()[:n] != 0) for t, table in points.items()}
    rows = []
    if "none" in correct:
        rows.append(metric_row(model_name, evalset, correct["none"], threat=CLEAN_ON_ATTACKED, attack="clean"))
    if len(norms) >= 2:
        union = torch.ones(n, dtype=torch.bool)
        for hits in correct.values():
            union &= hits
        attack = "+".join(sorted({attacks[t] for t in norms}))
        rows.append(metric_row(model_name, evalset, union, threat="union", attack=attack))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


def write_points(frame: pd.DataFrame, path: str | Path) -> None:
    """Per-point results (index, label, correct) as TSV, atomically."""
    write_text_atomic(path, frame[["index", "label", "correct"]].to_csv(sep="\t", index=False))


def read_points(path: str | Path) -> pd.DataFrame:
    """Per-point results written by :func:`write_points`."""
    frame = pd.read_csv(path, sep="\t")
    if list(frame.columns) != ["index", "label", "correct"]:
        raise ValueError(f"per-point file {path}: expected columns index, label, correct; found {list(frame.columns)}")
    return frame


def write_metrics(frame: pd.DataFrame, path: str | Path) -> None:
    """Write tidy rows as TSV, atomically, checking the column contract."""
    missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"metric rows lack columns {missing}; expected {METRIC_COLUMNS}")
    write_text_atomic(path, frame[METRIC_COLUMNS].to_csv(sep="\t", index=False))


def read_metrics(paths: Sequence[str | Path]) -> pd.DataFrame:
    """Concatenate metric files, checking each has the contract's columns."""
    frames = []
    for path in paths:
        frame = pd.read_csv(path, sep="\t")
        missing = [c for c in METRIC_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"metrics file {path} lacks columns {missing}; expected {METRIC_COLUMNS}")
        frames.append(frame[METRIC_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=METRIC_COLUMNS)
    return pd.concat(frames, ignore_index=True)
