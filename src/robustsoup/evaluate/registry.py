"""Evaluators by name, in the manner of big_vision's ``evaluators/``: each is a config with one ``run``.

An evaluator is a frozen dataclass (its config: what it evaluates on and how)
registered under a name (:func:`register_evaluator`); a stage builds one by
name (:func:`make_evaluator`) and runs it (on a model, on predictors, or on
rows for mCE). Adding an evaluation adds an evaluator here, never a loop in
a stage. Every evaluator of a model reads its batches through the one clean
batch loop (:mod:`robustsoup.evaluate.clean`) or the attacks'
(:func:`robustsoup.evaluate.adversarial.evaluate_threats`).

- ``clean``: clean accuracy on a split, one row (:class:`CleanAccuracy`);
- ``corrupted``: accuracy on a split's corrupted copies, one row per corruption × severity
  (:class:`CorruptedAccuracy`);
- ``adversarial``: clean accuracy, then robust accuracy per norm on the attacked prefix, whole or one
  shard (:class:`RobustAccuracy`);
- ``shift``: several predictors on one test set of a distribution shift, each batch read once and scored
  by all, one row each (:class:`ShiftAccuracy`: the soups' in-place soups and output ensembles);
- ``mce``: ImageNet-C's mCE and relative mCE from rows, not from a model
  (:class:`~robustsoup.evaluate.mce.MeanCorruptionError`, torch-free like its module, so report code runs it
  without this registry).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pandas as pd
import torch
from torch import nn

from ..attacks import AttackPlan
from ..data.loading import BatchSource
from ..data.scoring import Scoring, split_scoring
from ..data.splits import Split
from ..progress import progress
from .adversarial import Shard, evaluate_threats
from .clean import EVALUATION_BATCH, clean_correct, labelled_batches
from .mce import MeanCorruptionError
from .rows import MetricLog

EVALUATORS: dict[str, type] = {}


def register_evaluator(name: str) -> Callable[[type], type]:
    """Class decorator: register the evaluator under ``name`` (its ``name`` attribute too)."""

    def register(cls: type) -> type:
        if name in EVALUATORS:
            raise ValueError(f"evaluator {name!r} is registered twice ({EVALUATORS[name].__name__}, {cls.__name__})")
        cls.name = name
        EVALUATORS[name] = cls
        return cls

    return register


def make_evaluator(name: str, **config: Any):
    """The evaluator registered as ``name``, configured with ``config``."""
    if name not in EVALUATORS:
        raise ValueError(f"unknown evaluator {name!r}; registered: {sorted(EVALUATORS)}")
    return EVALUATORS[name](**config)


@register_evaluator("clean")
@dataclass(frozen=True)
class CleanAccuracy:
    """Clean accuracy of a model as it is (mode and device are the caller's) on ``data`` (a split, or a batch
    source over one), scored as its data set says: one row in ``evalset`` (default: the split's name) with
    the row's other columns from ``row`` (``corruption``, ``severity``, ``attack``, …); ``channels_last`` (true,
    false or auto: ``evaluate.channels_last``) the memory format the model computes in."""

    name: ClassVar[str]
    data: Split | BatchSource
    evalset: str | None = None
    batch_size: int = EVALUATION_BATCH
    row: Mapping[str, Any] = field(default_factory=dict)
    channels_last: bool | str = False

    def run(self, model: nn.Module, model_name: str, device, log: MetricLog | None = None) -> MetricLog:
        """Add the row and its per-point results to ``log`` (a new one by default); return it."""
        log = MetricLog() if log is None else log
        split = self.data.split if isinstance(self.data, BatchSource) else self.data
        correct = clean_correct(model, self.data, device, self.batch_size, channels_last=self.channels_last)
        log.add(model_name, self.evalset or split.split, correct, split.labels, **self.row)
        return log


@register_evaluator("corrupted")
@dataclass(frozen=True)
class CorruptedAccuracy:
    """Clean-scored accuracy on corrupted copies of a split: ``copies(corruption, severity)`` is the copy (a
    split, labels as the clean split's) for every corruption of ``corruptions`` × severity of
    ``severities``, in that order; one row each in ``evalset``, counted by a progress named ``desc``;
    ``channels_last`` as :class:`CleanAccuracy`'s."""

    name: ClassVar[str]
    copies: Callable[[str, int], Split]
    corruptions: Sequence[str]
    severities: Sequence[int]
    evalset: str
    batch_size: int = EVALUATION_BATCH
    desc: str = "corrupted sets"
    channels_last: bool | str = False

    def run(self, model: nn.Module, model_name: str, device, log: MetricLog | None = None) -> MetricLog:
        """Add a row per corruption × severity (with its per-point results) to ``log``; return it."""
        log = MetricLog() if log is None else log
        pairs = [(c, s) for c in self.corruptions for s in self.severities]
        for corruption, severity in progress(pairs, self.desc, unit="sets"):
            data = self.copies(corruption, severity)
            correct = clean_correct(model, data, device, self.batch_size, channels_last=self.channels_last)
            log.add(model_name, self.evalset, correct, data.labels, corruption=corruption, severity=severity)
        return log


@register_evaluator("adversarial")
@dataclass(frozen=True)
class RobustAccuracy:
    """Clean accuracy, then robust accuracy under every norm of ``plans`` (ε from ``eps``, in [0, 1] pixels) on
    the first ``n_attacked`` points of ``data``, in attack batches of ``batch_size`` seeded from ``seed``;
    with ``shard`` (:func:`~robustsoup.evaluate.adversarial.evaluation_shard`), that shard's points only;
    ``channels_last`` (true, false or auto): the memory format of the clean pass and the attacks."""

    name: ClassVar[str]
    data: Split | BatchSource
    eps: Mapping[str, float]
    plans: Mapping[str, AttackPlan]
    n_attacked: int
    seed: int = 0
    batch_size: int = 250
    shard: Shard | None = None
    channels_last: bool | str = False

    def run(self, model: nn.Module, model_name: str, device) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
        """``{"clean": (row, points), norm: (row, points), …}``: one tidy row and the per-point results per
        threat (a point is robust only if it is also correct clean), as
        :func:`~robustsoup.evaluate.adversarial.evaluate_threats` returns them."""
        return evaluate_threats(
            model,
            model_name,
            self.data,
            self.eps,
            self.plans,
            self.n_attacked,
            seed=self.seed,
            batch_size=self.batch_size,
            device=device,
            shard=self.shard,
            channels_last=self.channels_last,
        )


# A batch's scores: (uint8 images, labels, scoring, label sets or None) → per-image correctness, bool (B,),
# of each predictor by name.
BatchScores = Callable[[torch.Tensor, torch.Tensor, Scoring, "torch.Tensor | None"], Mapping[str, torch.Tensor]]


@register_evaluator("shift")
@dataclass(frozen=True)
class ShiftAccuracy:
    """Accuracy of several predictors on one test set of a distribution shift (``data``, scored as its data set
    says), read in batches of ``batch_size``: one row per predictor in ``evalset`` with the set's
    ``corruption`` and ``severity`` (a corruption family's mixture, a -C part, or ``none``/0)."""

    name: ClassVar[str]
    data: Split
    evalset: str
    corruption: str = "none"
    severity: int = 0
    batch_size: int = EVALUATION_BATCH

    def run(self, names: Sequence[str], scores: BatchScores, device, log: MetricLog | None = None) -> MetricLog:
        """Each batch read once and handed to ``scores``, which answers every predictor of ``names``; their
        rows (and per-point results) added to ``log`` in the order of ``names``; return it."""
        log = MetricLog() if log is None else log
        scoring = split_scoring(self.data)
        correct: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        for _, images, labels, targets in labelled_batches(self.data, device, self.batch_size):
            answered = scores(images, labels, scoring, targets)
            for name in names:
                correct[name].append(answered[name])
        labels = self.data.labels[: len(self.data)]
        for name, parts in correct.items():
            hits = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.bool)
            log.add(name, self.evalset, hits, labels, corruption=self.corruption, severity=self.severity)
        return log


register_evaluator("mce")(MeanCorruptionError)
