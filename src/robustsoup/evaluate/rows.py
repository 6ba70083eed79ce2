"""Tidy metric rows: the one format every evaluation writes, and the per-point results beside them.

Every measurement is one row of :data:`METRIC_COLUMNS`; tables and figures
are built from these rows only. A row counts per-point correctness, so union
accuracy (correct clean and under every norm's attack) is counted, not
approximated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from ..io import write_text_atomic
from ..points import keyed_points, points_frame, write_keyed_points

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


def row_frame(rows: Sequence[dict]) -> pd.DataFrame:
    """Rows of :func:`metric_row` as a frame with exactly :data:`METRIC_COLUMNS`."""
    return pd.DataFrame(list(rows), columns=METRIC_COLUMNS)


def point_results(labels: torch.Tensor, correct: torch.Tensor, start: int = 0) -> pd.DataFrame:
    """Per-point results (:func:`robustsoup.points.points_frame`) of points ``start``, ``start`` + 1, …"""
    return points_frame(labels.cpu().numpy(), correct.cpu().numpy(), start)


class MetricLog:
    """Tidy rows and the per-point results of each (:func:`robustsoup.points.keyed_points`), written together:
    what a stage that measures many things at once keeps, so that every comparison can be paired."""

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.points: list[pd.DataFrame] = []

    def add(self, model: str, evalset: str, correct: torch.Tensor, labels: torch.Tensor | None = None, **row) -> dict:
        """Count ``correct`` as :func:`metric_row` does, keep its per-point results; return the row."""
        entry = metric_row(model, evalset, correct, **row)
        correct = correct.cpu()
        labels = torch.full_like(correct, -1, dtype=torch.long) if labels is None else labels.cpu()
        self.rows.append(entry)
        self.points.append(keyed_points(entry, labels.numpy(), correct.numpy()))
        return entry

    def write(self, rows_path: str | Path, points_path: str | Path | None = None) -> pd.DataFrame:
        """Write the rows (:func:`write_metrics`) and, with ``points_path``, their per-point results."""
        frame = row_frame(self.rows)
        write_metrics(frame, rows_path)
        if points_path is not None:
            write_keyed_points(self.points, points_path)
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
