"""Evaluation: clean, per-norm robust and union accuracy as tidy metric rows.

Every measurement is one row of :data:`METRIC_COLUMNS`; tables and figures
are built from these rows only. Robust accuracy is per point, so union
accuracy (correct clean and under every norm's attack) is counted, not
approximated.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from .attacks import apgd_ce_name, robust_correct_apgd_ce
from .data import ImageSplit
from .io import write_text_atomic

log = logging.getLogger(__name__)

METRIC_COLUMNS = [
    "model", "evalset", "corruption", "severity", "threat", "eps", "attack", "n", "correct", "accuracy",
]
THREATS = ("none", "Linf", "L2", "L1", "union")


@torch.no_grad()
def clean_correct(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """Per-point clean correctness, bool (N,)."""
    return torch.cat(
        [model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size] for i in range(0, len(x), batch_size)]
    )


def _row(model: str, evalset: str, threat: str, eps: float, attack: str, correct: torch.Tensor) -> dict:
    n = int(correct.numel())
    hits = int(correct.sum())
    return {
        "model": model, "evalset": evalset, "corruption": "none", "severity": 0, "threat": threat,
        "eps": eps, "attack": attack, "n": n, "correct": hits, "accuracy": hits / n,
    }


def evaluate_clean_and_adversarial(
    model: nn.Module,
    model_name: str,
    data: ImageSplit,
    threats: Mapping[str, float],
    n_attacked: int,
    n_iter: int,
    n_restarts: int = 1,
    seed: int = 0,
    batch_size: int = 250,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Clean accuracy on all of ``data`` and APGD-CE robust accuracy on its first ``n_attacked`` images.

    ``threats`` maps a norm (``Linf``, ``L2``, ``L1``) to its ε in [0,1]
    pixel space. Returns tidy rows: one clean row (threat ``none``), one per
    norm and, with two or more norms, one ``union`` row over the attacked
    subset.
    """
    model = model.to(device).eval()
    x_all, y_all = data.as_float()
    x_all, y_all = x_all.to(device), y_all.to(device)
    rows = [_row(model_name, data.split, "none", 0.0, "clean", clean_correct(model, x_all, y_all))]
    x, y = x_all[:n_attacked], y_all[:n_attacked]
    attack = apgd_ce_name(n_iter, n_restarts)
    union = clean_correct(model, x, y)
    for norm, eps in threats.items():
        start = time.perf_counter()
        robust = robust_correct_apgd_ce(
            model, x, y, norm, eps, n_iter=n_iter, n_restarts=n_restarts, seed=seed, batch_size=batch_size
        )
        log.info("%s %s ε=%g: robust accuracy %.4f on %d images (%.1fs)", model_name, norm, eps,
                 robust.float().mean().item(), len(y), time.perf_counter() - start)
        rows.append(_row(model_name, data.split, norm, eps, attack, robust))
        union &= robust
    if len(threats) > 1:
        rows.append(_row(model_name, data.split, "union", 0.0, attack, union))
    return pd.DataFrame(rows, columns=METRIC_COLUMNS)


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
