"""ImageNet-C mCE and relative mCE against a hand computation on a made-up table."""

from __future__ import annotations

import pandas as pd
import pytest

from robustsoup.data.corruptions import STANDARD_CORRUPTIONS
from robustsoup.evaluate.mce import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS, imagenet_c_mce, mce_applies


def _rows(model: str, clean_acc: float, acc) -> list[dict]:
    """Tidy rows: a clean row and one per corruption × severity with accuracy ``acc(c_index, severity)``."""
    base = {"model": model, "evalset": "val", "threat": "none", "eps": 0.0, "attack": "clean", "n": 100}
    rows = [{**base, "corruption": "none", "severity": 0, "accuracy": clean_acc}]
    for i, corruption in enumerate(STANDARD_CORRUPTIONS):
        for severity in range(1, 6):
            rows.append({**base, "corruption": corruption, "severity": severity, "accuracy": acc(i, severity)})
    # A robust row that must be ignored (threat other than none).
    rows.append({**base, "corruption": "fog", "severity": 3, "threat": "Linf", "accuracy": 0.0})
    return rows


def test_constants_cover_the_fifteen_standard_corruptions_in_order() -> None:
    assert tuple(ALEXNET_ERRORS) == STANDARD_CORRUPTIONS
    assert pytest.approx(0.43478) == ALEXNET_CLEAN_ERROR


def test_alexnet_itself_scores_one_hundred_percent() -> None:
    """A model erring exactly as AlexNet does has mCE = relative mCE = 1."""
    errors = list(ALEXNET_ERRORS.values())
    frame = pd.DataFrame(_rows("alexnet", 1 - ALEXNET_CLEAN_ERROR, lambda i, s: 1 - errors[i]))
    table = imagenet_c_mce(frame)
    assert table.loc["alexnet", "mce"] == pytest.approx(1.0)
    assert table.loc["alexnet", "relative_mce"] == pytest.approx(1.0)
    assert table.loc["alexnet", "corruptions"] == 15


def test_matches_a_hand_computation() -> None:
    # Model m: clean error 0.2; on corruption i at severity s the error is 0.1·s + 0.01·i (accuracy 1 − that).
    frame = pd.DataFrame(_rows("m", 0.8, lambda i, s: 1 - (0.1 * s + 0.01 * i)))
    table = imagenet_c_mce(frame)
    # Σ_s E = 0.1·15 + 5·0.01·i = 1.5 + 0.05 i; Σ_s E_AlexNet = 5·A_i.
    ces = [(1.5 + 0.05 * i) / (5 * a) for i, a in enumerate(ALEXNET_ERRORS.values())]
    rces = [
        (1.5 + 0.05 * i - 5 * 0.2) / (5 * a - 5 * ALEXNET_CLEAN_ERROR) for i, a in enumerate(ALEXNET_ERRORS.values())
    ]
    assert table.loc["m", "clean_error"] == pytest.approx(0.2)
    assert table.loc["m", "ce:gaussian_noise"] == pytest.approx(1.5 / (5 * 0.886428))
    assert table.loc["m", "ce:jpeg_compression"] == pytest.approx((1.5 + 0.7) / (5 * 0.6065))
    assert table.loc["m", "mce"] == pytest.approx(sum(ces) / 15)
    assert table.loc["m", "relative_mce"] == pytest.approx(sum(rces) / 15)


def test_incomplete_rows_raise_unless_not_strict() -> None:
    rows = [r for r in _rows("m", 0.8, lambda i, s: 0.5) if not (r["corruption"] == "fog" and r["severity"] == 5)]
    with pytest.raises(ValueError, match="fog@5"):
        imagenet_c_mce(pd.DataFrame(rows))
    table = imagenet_c_mce(pd.DataFrame(rows), strict=False)
    assert table.loc["m", "corruptions"] == 14
    assert "ce:fog" not in table.columns
    others = [0.5 / a for c, a in ALEXNET_ERRORS.items() if c != "fog"]
    assert table.loc["m", "mce"] == pytest.approx(sum(others) / 14)


def test_duplicated_rows_and_missing_clean_row_are_errors() -> None:
    rows = _rows("m", 0.8, lambda i, s: 0.5)
    with pytest.raises(ValueError, match="evalset"):
        imagenet_c_mce(pd.DataFrame(rows + [rows[3]]))
    with pytest.raises(ValueError, match="no clean row"):
        imagenet_c_mce(pd.DataFrame(rows[1:]))


def test_mce_applies_to_imagenet_only() -> None:
    assert mce_applies("imagenet")
    assert not mce_applies("cifar10")
    assert not mce_applies("digits")
