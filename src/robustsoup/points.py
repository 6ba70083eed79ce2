"""Per-point results: which test image each measurement got right, so comparisons can be paired.

One format. A per-point table has the columns ``index`` (the image's position in its split),
``label`` and ``correct`` (0/1). A model's evaluation (:mod:`robustsoup.evaluate`) writes one such
file per threat (``<threat>.points.tsv``); a stage that measures many things at once (the soups'
shifts, the RWS and distillation evaluations) writes one *keyed* file beside its tidy rows
(``<rows>.points.tsv.gz``): the same three columns under the identity of the metric row they count
(model, evalset, corruption, severity, threat), gzip-compressed.

Torch-free: the findings (:mod:`robustsoup.report.findings`) read these files in the command line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .io import atomic_path, write_text_atomic

POINT_COLUMNS = ["index", "label", "correct"]
# The metric row's identity a keyed per-point row carries (the columns of robustsoup.evaluate.rows.METRIC_COLUMNS
# that name a measurement).
POINT_KEYS = ["model", "evalset", "corruption", "severity", "threat"]


def points_frame(labels, correct, start: int = 0) -> pd.DataFrame:
    """Per-point results of images ``start`` … ``start + len(labels) − 1``: index, label, correct (0/1)."""
    labels = np.asarray(labels)
    return pd.DataFrame(
        {
            "index": np.arange(start, start + len(labels)),
            "label": labels,
            "correct": np.asarray(correct).astype(int),
        }
    )


def write_points(frame: pd.DataFrame, path: str | Path) -> None:
    """Per-point results (index, label, correct) as TSV, atomically."""
    write_text_atomic(path, frame[POINT_COLUMNS].to_csv(sep="\t", index=False))


def read_points(path: str | Path) -> pd.DataFrame:
    """Per-point results written by :func:`write_points`."""
    frame = pd.read_csv(path, sep="\t")
    if list(frame.columns) != POINT_COLUMNS:
        raise ValueError(f"per-point file {path}: expected columns index, label, correct; found {list(frame.columns)}")
    return frame


def keyed_points(row: Mapping, labels, correct) -> pd.DataFrame:
    """The per-point results of the metric row ``row`` (a dict of the tidy columns), keyed by its identity."""
    frame = points_frame(labels, correct)
    for key in reversed(POINT_KEYS):
        frame.insert(0, key, row[key])
    return frame


def write_keyed_points(frames: Sequence[pd.DataFrame], path: str | Path) -> None:
    """Keyed per-point results (:func:`keyed_points` of each metric row) as one gzip-compressed TSV, atomically."""
    columns = [*POINT_KEYS, *POINT_COLUMNS]
    frame = pd.concat(list(frames), ignore_index=True) if frames else pd.DataFrame(columns=columns)
    with atomic_path(path) as tmp:
        frame[columns].to_csv(tmp, sep="\t", index=False, compression={"method": "gzip", "mtime": 0})


def read_keyed_points(path: str | Path) -> pd.DataFrame:
    """Keyed per-point results written by :func:`write_keyed_points`."""
    frame = pd.read_csv(path, sep="\t", compression="gzip", keep_default_na=False)
    expected = [*POINT_KEYS, *POINT_COLUMNS]
    if list(frame.columns) != expected:
        raise ValueError(f"keyed per-point file {path}: expected columns {expected}; found {list(frame.columns)}")
    return frame
