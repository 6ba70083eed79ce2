"""Label-free soups chosen with a safety signal: every label-free method on one shared pass over the grid
(:func:`choose_without_labels`), and how often the other methods' picks predict differently
(:func:`pick_disagreement`); above a threshold a pick is not trusted and the pipeline falls back to the best
base model (:class:`LabelFreeChoice`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median as statistics_median

import torch

from ..data.scoring import ARGMAX, Scoring
from .search import LABEL_FREE_METHODS, Selection, SoupScorer, SoupStatistics, label_free_selection, soup_statistics


def pick_disagreement(statistics: SoupStatistics, picks: Mapping[str, int]) -> dict[str, float]:
    """For each method's pick (a grid index), the median over the *other* methods' picks of the
    fraction of unlabelled images on which the two soups predict different classes.

    0: most other label-free methods chose a soup that predicts like this one (the median lets
    one outlying method, e.g. entropy drawn to an over-confident soup, flag only its own pick);
    NaN with a single method.
    """
    rates = {}
    for method, i in picks.items():
        others = [j for m, j in picks.items() if m != method]
        differ = [float((statistics.predictions[i] != statistics.predictions[j]).double().mean()) for j in others]
        rates[method] = statistics_median(differ) if differ else math.nan
    return rates


@dataclass
class LabelFreeChoice:
    """Label-free picks on one set of images, with the safety signal of each."""

    selections: dict[str, Selection]
    disagreement: dict[str, float]
    threshold: float
    statistics: SoupStatistics

    def fallback(self, method: str) -> bool:
        """Whether ``method``'s pick is not trusted to beat the best base model: the label-free
        picks disagree on more than ``threshold`` of the images (never with a single method)."""
        d = self.disagreement[method]
        return not math.isnan(d) and d > self.threshold


def choose_without_labels(
    scorer: SoupScorer,
    grid: Sequence[Mapping[str, float]],
    inputs: torch.Tensor,
    methods: Sequence[str],
    threshold: float,
    labels: torch.Tensor | None = None,
    scoring: Scoring = ARGMAX,
    targets: torch.Tensor | None = None,
) -> LabelFreeChoice:
    """Every label-free method in ``methods`` on one shared pass over the grid, and their disagreement
    (over the set's labels under ``scoring``; ``labels`` and ``targets`` only fill the diagnostic)."""
    unknown = [m for m in methods if m not in LABEL_FREE_METHODS]
    if unknown or not methods:
        raise ValueError(f"label-free methods {list(methods)}: expected some of {sorted(LABEL_FREE_METHODS)}")
    batchnorm = any(LABEL_FREE_METHODS[m].needs_batchnorm for m in methods)
    statistics = soup_statistics(scorer, grid, inputs, labels, batchnorm=batchnorm, scoring=scoring, targets=targets)
    selections = {m: label_free_selection(m, scorer, grid, inputs, statistics=statistics) for m in methods}
    picks = {m: s.details["index"] for m, s in selections.items()}
    return LabelFreeChoice(selections, pick_disagreement(statistics, picks), threshold, statistics)
