"""The soups table's ImageNet-C columns: mean accuracy over corruptions × severities, mCE and relative mCE
of the model in that column, against a hand computation (and absent where mCE does not apply)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from robustsoup.evaluate.mce import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS
from robustsoup.evaluate.rows import METRIC_COLUMNS
from robustsoup.soups.report import shifts_table


def _rows(model: str, clean: float | None, error) -> list[dict]:
    """A clean row (unless ``clean`` is None) and ImageNet-C rows with error ``error(i, s)``."""
    base = {"model": model, "threat": "none", "eps": 0.0, "attack": "clean", "n": 100, "correct": 0}
    rows = []
    if clean is not None:
        rows.append({**base, "evalset": "clean", "corruption": "none", "severity": 0, "accuracy": clean})
    for i, corruption in enumerate(ALEXNET_ERRORS):
        for s in range(1, 6):
            rows.append(
                {**base, "evalset": "imagenet-c", "corruption": corruption, "severity": s, "accuracy": 1 - error(i, s)}
            )
    return rows


def _tables(dataset: str) -> pd.DataFrame:
    metrics = pd.DataFrame(
        _rows("a", 0.8, lambda i, s: 0.1 * s + 0.01 * i)
        + _rows("b", 0.7, lambda i, s: 0.5)
        + _rows("soup-imagenet-c-grid-k100", None, lambda i, s: 0.4),
        columns=METRIC_COLUMNS,
    )
    models = pd.DataFrame(
        [
            {"model": m, "kind": "base", "method": "", "k": 0, "flops": 1, "weights": json.dumps({m: 1.0})}
            for m in ("a", "b")
        ]
        + [
            {
                "model": "soup-imagenet-c-grid-k100",
                "kind": "specific",
                "method": "grid",
                "k": 100,
                "flops": 1,
                "weights": "{}",
            }
        ]
    )
    selection = pd.DataFrame(
        [{"evalset": "imagenet-c", "k": 100, "method": "grid", "forward_passes": 10, "label_free": 0}]
    )
    return shifts_table(metrics, models, selection, ["clean", "imagenet-c"], dataset)


def test_imagenet_c_column_is_the_mean_and_mce_sits_next_to_it():
    table = _tables("imagenet")
    assert list(table.columns[:6]) == [
        "kind",
        "clean",
        "imagenet-c",
        "mean",
        "imagenet-c mCE",
        "imagenet-c relative mCE",
    ]
    # Model a: error 0.1·s + 0.01·i, mean over s = 1…5 and i = 0…14: 0.3 + 0.07 → accuracy 63 %.
    assert table.loc["a", "imagenet-c"] == pytest.approx(63.0)
    alexnet = list(ALEXNET_ERRORS.values())
    mce = sum((0.3 + 0.01 * i) / a for i, a in enumerate(alexnet)) / 15 * 100
    relative = sum((0.3 + 0.01 * i - 0.2) / (a - ALEXNET_CLEAN_ERROR) for i, a in enumerate(alexnet)) / 15 * 100
    assert table.loc["a", "imagenet-c mCE"] == pytest.approx(round(mce, 1))
    assert table.loc["a", "imagenet-c relative mCE"] == pytest.approx(round(relative, 1))
    assert table.loc["b", "imagenet-c mCE"] == pytest.approx(round(sum(0.5 / a for a in alexnet) / 15 * 100, 1))
    # The per-shift soup was tested on ImageNet-C alone: its mCE, no relative mCE (no clean accuracy).
    soup = table.loc["per-shift soups (grid, k=100)"]
    assert soup["imagenet-c"] == pytest.approx(60.0)
    assert soup["imagenet-c mCE"] == pytest.approx(round(sum(0.4 / a for a in alexnet) / 15 * 100, 1))
    assert pd.isna(soup["imagenet-c relative mCE"])
    assert pd.isna(table.loc["best base model per shift (oracle)", "imagenet-c mCE"])


def test_no_mce_where_alexnets_constants_do_not_apply():
    table = _tables("cifar10")
    assert not any("mCE" in c for c in table.columns)
    assert table.loc["a", "imagenet-c"] == pytest.approx(63.0)
