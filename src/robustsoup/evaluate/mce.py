"""ImageNet-C's mean Corruption Error (mCE) and relative mCE from tidy metric rows.

Hendrycks & Dietterich (ICLR 2019) normalise a model's error on each of the
15 standard corruptions by AlexNet's error on it, so that corruptions of
different difficulty weigh the same:

* CE_c = Σ_s E_{c,s} / Σ_s E^AlexNet_{c,s}, s over severities 1…5, and
  mCE = mean of CE_c over the 15 corruptions;
* relative CE_c = Σ_s (E_{c,s} − E_clean) / Σ_s (E^AlexNet_{c,s} − E^AlexNet_clean),
  relative mCE = its mean over the corruptions (the *drop* under corruption,
  normalised the same way).

AlexNet's per-corruption errors are published as means over the 5
severities (google-research/augmix ``imagenet.py`` l. 147–152, "Raw AlexNet
errors taken from https://github.com/hendrycks/robustness"; hendrycks/robustness
``ImageNet-C/test.py`` itself prints the unnormalised error only, l. 287),
so Σ_s E^AlexNet_{c,s} = 5 · that mean and each ratio uses the model's mean
over severities likewise. AlexNet's clean error is 1 − 0.56522, the top-1
accuracy of torchvision's ``alexnet-owt-4df8aa71.pth``, the weights
``ImageNet-C/test.py`` evaluates (l. 37–39). These constants belong to
ImageNet-C at 224 px only: a CIFAR-10-C or digits run has no standard
normaliser, so tables show mCE for ``dataset: imagenet`` alone
(:func:`mce_applies`). Pure pandas, no torch: report code may import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd

# Mean error over severities 1–5 of torchvision's AlexNet on ImageNet-C, Hendrycks' order
# (google-research/augmix imagenet.py l. 140–152, commit 9b9824c).
ALEXNET_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
# Top-1 error of the same AlexNet on clean ImageNet validation images (pytorch/vision torchvision/models/alexnet.py,
# AlexNet_Weights.IMAGENET1K_V1 acc@1 56.522; the paper's Table 1 rounds it to 43.5).
ALEXNET_CLEAN_ERROR = 1.0 - 0.56522
IMAGENET_C_SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# Data sets whose corrupted copies are ImageNet-C's, where AlexNet's constants apply.
MCE_DATASETS: tuple[str, ...] = ("imagenet",)


def mce_applies(dataset: str) -> bool:
    """Whether mCE means anything for ``dataset`` (ImageNet-C only; CIFAR-10-C and digits have no normaliser)."""
    return dataset in MCE_DATASETS


def _error(rows: pd.DataFrame, model: str, what: str) -> float:
    if len(rows) > 1:
        raise ValueError(
            f"{model}: {len(rows)} clean-threat rows for {what}; expected one. "
            "Pass the metric rows of one evaluation set (filter on 'evalset') or drop duplicated rows."
        )
    return float(1.0 - rows["accuracy"].iloc[0])


def imagenet_c_mce(
    metrics: pd.DataFrame,
    severities: Sequence[int] = IMAGENET_C_SEVERITIES,
    strict: bool = True,
) -> pd.DataFrame:
    """mCE and relative mCE per model from tidy rows (columns of :data:`robustsoup.evaluate.rows.METRIC_COLUMNS`).

    Reads the rows with ``threat == "none"``: the clean row (``corruption ==
    "none"``) and one row per standard corruption × severity. Returns one row
    per model (index ``model``): ``clean_error``, ``mce``, ``relative_mce``
    (fractions: 1.0 is AlexNet), ``corruptions`` (how many were counted) and
    ``ce:<corruption>`` / ``rce:<corruption>`` per corruption. ``strict``
    raises when a model lacks a corruption × severity (mCE over fewer
    corruptions is not ImageNet-C's mCE); otherwise only the corruptions with
    every severity count, and ``corruptions`` says how many, and a model
    without a clean row gets its mCE with ``clean_error`` and ``relative_mce``
    NaN (a soup chosen for ImageNet-C is tested on it alone).
    """
    missing_columns = {"model", "corruption", "severity", "threat", "accuracy"} - set(metrics.columns)
    if missing_columns:
        raise ValueError(f"metric rows lack columns {sorted(missing_columns)}; expected the tidy metric columns")
    plain = metrics[metrics["threat"] == "none"]
    out = []
    for model, own in plain.groupby("model", sort=False):
        clean = own[own["corruption"] == "none"]
        if clean.empty and strict:
            raise ValueError(f"{model}: no clean row (corruption 'none', threat 'none'); relative mCE needs it")
        clean_error = _error(clean, model, "clean data") if not clean.empty else float("nan")
        row: dict = {"model": model, "clean_error": clean_error}
        ces, rces, absent = [], [], []
        for corruption, alexnet in ALEXNET_ERRORS.items():
            errors = []
            for severity in severities:
                hit = own[(own["corruption"] == corruption) & (own["severity"] == severity)]
                if hit.empty:
                    absent.append(f"{corruption}@{severity}")
                    errors = None
                    break
                errors.append(_error(hit, model, f"{corruption} severity {severity}"))
            if errors is None:
                continue
            mean_error = float(np.mean(errors))
            row[f"ce:{corruption}"] = mean_error / alexnet
            row[f"rce:{corruption}"] = (mean_error - clean_error) / (alexnet - ALEXNET_CLEAN_ERROR)
            ces.append(row[f"ce:{corruption}"])
            rces.append(row[f"rce:{corruption}"])
        if absent and strict:
            raise ValueError(
                f"{model}: ImageNet-C's mCE needs all 15 corruptions × severities {list(severities)}; missing "
                f"{', '.join(absent[:6])}{' …' if len(absent) > 6 else ''}. Evaluate them, or pass strict=False "
                "for an mCE over the complete corruptions only."
            )
        row["mce"] = float(np.mean(ces)) if ces else float("nan")
        row["relative_mce"] = float(np.mean(rces)) if rces else float("nan")
        row["corruptions"] = len(ces)
        out.append(row)
    leading = ["model", "clean_error", "mce", "relative_mce", "corruptions"]
    frame = pd.DataFrame(out)
    if frame.empty:
        return pd.DataFrame(columns=leading).set_index("model")
    return frame[leading + [c for c in frame.columns if c not in leading]].set_index("model")


def mce_columns(metrics: pd.DataFrame, evalset: str, clean_evalset: str, dataset: str) -> pd.DataFrame:
    """The table columns ``mCE`` and ``relative mCE`` (percent; AlexNet = 100) per model, from the rows of
    ``evalset`` (one per standard corruption × severity) and each model's clean row in ``clean_evalset``.

    Empty where mCE does not apply (:func:`mce_applies`); a model lacking a
    corruption × severity gets no mCE (NaN), one without a clean row no
    relative mCE.
    """
    if not mce_applies(dataset):
        return pd.DataFrame(columns=["mCE", "relative mCE"])
    rows = metrics[
        (metrics["evalset"] == evalset) | ((metrics["evalset"] == clean_evalset) & (metrics["corruption"] == "none"))
    ]
    table = imagenet_c_mce(rows, strict=False)
    complete = table["corruptions"] == len(ALEXNET_ERRORS)
    out = pd.DataFrame({"mCE": table["mce"] * 100, "relative mCE": table["relative_mce"] * 100}, index=table.index)
    return out.where(complete)


@dataclass(frozen=True)
class MeanCorruptionError:
    """The ``mce`` evaluator (:mod:`robustsoup.evaluate.registry`): :func:`mce_columns` of ``evalset``'s
    rows with each model's clean row from ``clean_evalset``, on a run of ``dataset``. It scores rows, not a
    model, and stays torch-free, so report code runs it without loading torch."""

    name: ClassVar[str] = "mce"
    evalset: str
    clean_evalset: str
    dataset: str

    def run(self, metrics: pd.DataFrame) -> pd.DataFrame:
        """``mCE`` and ``relative mCE`` per model (percent; AlexNet = 100), empty where mCE does not apply."""
        return mce_columns(metrics, self.evalset, self.clean_evalset, self.dataset)
