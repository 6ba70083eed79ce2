"""Clean accuracy: the one batch loop every evaluation of a model's predictions runs.

:func:`labelled_batches` reads a split through its
:class:`~robustsoup.data.loading.BatchSource` (a decoded split held on the
GPU, a file list decoded by the loader's workers: as training reads it, so no
split is held in float32) with each batch's label sets; :func:`batch_correct`
scores one batch under the split's data set's scoring
(:func:`robustsoup.data.scoring.split_scoring`: argmax for most sets, the
label sets of ImageNet-ReaL, the 16 categories of the cue-conflict stimuli);
:func:`clean_correct` is the two over a split. Every study's clean and
corrupted accuracy comes from here (the soups' in-place scorer reads the
same batches and scores many soups on each).
"""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import torch
from torch import nn

from ..data.loading import BatchSource, batch_source
from ..data.scoring import ARGMAX, Scoring, split_scoring
from ..data.splits import Split
from ..device import resolve_arithmetic
from ..models.memory_format import computing_in
from ..progress import Progress
from .rows import metric_row, point_results, row_frame

EVALUATION_BATCH = 500  # images per forward pass of a clean evaluation unless the caller says otherwise


def labelled_batches(
    data: Split | BatchSource, device, batch_size: int = EVALUATION_BATCH, start: int = 0, stop: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """``(indices, uint8 images, labels, label sets or None)`` of points [``start``, ``stop``) of ``data`` (a
    split, or a batch source over one; to the end by default) in order, ``batch_size`` at a time: indices on
    the CPU, images (B, 3, R, R) and labels on ``device``, the label sets (ImageNet-ReaL's) as the split
    holds them."""
    source = batch_source(data, device)
    targets = getattr(source.split, "targets", None)
    stop = len(source) if stop is None else stop
    for idx, images, labels in source.batches(torch.arange(start, stop), batch_size):
        yield idx, images, labels, None if targets is None else targets[idx]


def model_inputs(images: torch.Tensor) -> torch.Tensor:
    """uint8 images → float32 in [0, 1], what every model here takes (its normalization is its own)."""
    return images.float().div_(255.0)


@torch.no_grad()
def batch_correct(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    scoring: Scoring = ARGMAX,
    targets: torch.Tensor | None = None,
    channels_last: bool | str = False,
) -> torch.Tensor:
    """Per-image clean correctness, bool (B,), of one batch of uint8 ``images`` under ``scoring``
    (``targets``: the label sets it may read). ``channels_last`` (``evaluate.channels_last``: true, false or
    auto, :func:`~robustsoup.device.resolve_channels_last`): the memory format the model computes in."""
    channels_last = resolve_arithmetic("float32", channels_last, images.device, model).channels_last
    with computing_in(model, channels_last) as net:
        return _scored(net, images, labels, scoring, targets)


def _scored(model: nn.Module, images, labels, scoring: Scoring, targets) -> torch.Tensor:
    return scoring.correct(model(model_inputs(images)), labels, targets)


def clean_correct(
    model: nn.Module,
    data: Split | BatchSource,
    device,
    batch_size: int = EVALUATION_BATCH,
    start: int = 0,
    stop: int | None = None,
    desc: str | None = None,
    channels_last: bool | str = False,
) -> torch.Tensor:
    """Per-point clean correctness, bool (N,) on the CPU, of ``model`` as it is (its mode and device are the
    caller's) on points [``start``, ``stop``) of ``data`` under its data set's scoring; with ``desc``, the loop
    counts its batches under that name (:class:`~robustsoup.progress.Progress`). ``channels_last``: as
    :func:`batch_correct`'s, the model converted once for the whole loop."""
    source = batch_source(data, device)
    scoring = split_scoring(source.split)
    stop = len(source) if stop is None else stop
    hits = [torch.zeros(0, dtype=torch.bool, device=source.device)]
    batches = -(-max(0, stop - start) // batch_size)
    channels_last = resolve_arithmetic("float32", channels_last, source.device, model).channels_last
    with (
        Progress(batches, desc or "clean", "batches", enabled=desc is not None) as counter,
        computing_in(model, channels_last) as net,
    ):
        for _idx, images, labels, targets in labelled_batches(source, device, batch_size, start, stop):
            hits.append(_scored(net, images, labels, scoring, targets))
            counter.advance()
    return torch.cat(hits).cpu()


def evaluate_clean(
    model: nn.Module,
    model_name: str,
    data: Split | BatchSource,
    device="cpu",
    batch_size: int = EVALUATION_BATCH,
    start: int = 0,
    stop: int | None = None,
    channels_last: bool | str = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Clean accuracy of ``model`` (moved to ``device``, in eval mode) on points [``start``, ``stop``) of
    ``data`` (all by default): (one tidy row, per-point correctness); ``channels_last`` as :func:`clean_correct`'s."""
    model = model.to(device).eval()
    source = batch_source(data, device)
    correct = clean_correct(model, source, device, batch_size, start, stop, f"{model_name} clean", channels_last)
    stop = len(source) if stop is None else stop
    row = metric_row(model_name, source.split.split, correct)
    return row_frame([row]), point_results(source.split.labels[start:stop], correct, start)
