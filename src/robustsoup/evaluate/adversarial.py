"""Adversarial evaluation: per-norm robust and union accuracy as tidy metric rows, whole or in shards.

Robust accuracy is per point (a point is robust only if it is also correct
clean), so union accuracy (correct clean and under every norm's attack) is
counted, not approximated. The attack plans and the protocol version they
make up are :mod:`robustsoup.attacks`'.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pandas as pd
import torch
from torch import nn

from ..attacks import AttackPlan, robust_correct
from ..data import ImageSplit
from ..data.loading import BatchSource, batch_source
from ..data.scoring import ARGMAX, split_scoring
from ..device import resolve_arithmetic
from ..progress import Progress
from .clean import evaluate_clean
from .rows import CLEAN_ON_ATTACKED, METRIC_COLUMNS, metric_row, point_results

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """One job's share of a model's evaluation (``evaluate.shards``): the attacked points
    [``start``, ``stop``) and the clean points [``start``, ``clean_stop``) of the test split.

    The attacked prefix is cut into contiguous runs of whole attack batches, so every batch, and with it
    every random start of AutoAttack (seeded per batch), is the one an unsharded evaluation draws: the
    shards' per-point results concatenate to exactly the unsharded ones. The last shard also takes the
    clean points past the attacked prefix.
    """

    index: int
    count: int
    start: int
    stop: int
    clean_stop: int


def evaluation_shard(n_attacked: int, n_total: int, batch_size: int, count: int = 1, index: int = 0) -> Shard:
    """Shard ``index`` of ``count`` of an evaluation attacking the first ``n_attacked`` of ``n_total`` points
    in batches of ``batch_size``: shard s takes batches ⌊s·B/count⌋ … ⌊(s+1)·B/count⌋ − 1 of the B batches
    (a shard is empty when there are fewer batches than shards)."""
    if not 0 <= index < count:
        raise ValueError(f"shard {index} of {count}: expected 0 ≤ shard < {count} (evaluate.shards)")
    if not 0 <= n_attacked <= n_total or batch_size < 1:
        raise ValueError(
            f"cannot shard {n_attacked} attacked of {n_total} points in batches of {batch_size}: "
            "expected 0 ≤ attacked ≤ total and a batch of at least 1"
        )
    batches = -(-n_attacked // batch_size)
    start, stop = (min(n_attacked, (b * batches // count) * batch_size) for b in (index, index + 1))
    return Shard(index, count, start, stop, n_total if index == count - 1 else stop)


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
    start: int = 0,
    counter: Progress | None = None,
    channels_last: bool | str = False,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Robust accuracy under ``plan`` in the ``norm`` ε-ball on images ``start`` … ``n_attacked`` − 1 (the
    first ``n_attacked`` by default); ``counter`` counts each attacked batch. ``channels_last`` (``evaluate.
    channels_last``: true, false or auto, :func:`~robustsoup.device.resolve_channels_last`): the attacks' memory format.

    Returns one tidy row and the per-point robust correctness (a point is
    robust only if it is also correct clean). ε is in [0,1] pixel space.
    Only sets scored by argmax have a robust accuracy here: the attacks
    maximise the loss of the one label.
    """
    split = data.split if isinstance(data, BatchSource) else data
    scoring = split_scoring(split)
    if scoring != ARGMAX:
        raise ValueError(
            f"robust accuracy on {split.dataset} is not defined here: its predictions are scored by "
            f"{scoring.kind}, the attacks by the argmax over the model's classes. Evaluate it clean."
        )
    model = model.to(device).eval()
    source = batch_source(data, device)
    x, y = source.floats(start, n_attacked)
    began = time.perf_counter()
    channels_last = resolve_arithmetic("float32", channels_last, device, model).channels_last  # the job's record
    robust = robust_correct(
        model, x, y, norm, eps, plan, seed=seed, batch_size=batch_size, counter=counter, channels_last=channels_last
    )
    log.info(
        "%s %s ε=%g: robust accuracy %.4f on %d images with %s%s (%.1fs)",
        model_name,
        norm,
        eps,
        robust.float().mean().item(),
        len(y),
        plan.name,
        ", channels_last" if channels_last else "",
        time.perf_counter() - began,
    )
    row = metric_row(model_name, source.split.split, robust, threat=norm, eps=eps, attack=plan.name)
    return pd.DataFrame([row], columns=METRIC_COLUMNS), point_results(y, robust, start)


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
    shard: Shard | None = None,
    channels_last: bool | str = False,
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Clean accuracy, then robust accuracy under every norm of ``plans`` (ε from ``eps``) on the first
    ``n_attacked`` images: ``{"clean": (row, points), norm: (row, points), …}`` in that order; one
    batch source (``data``, or one over the split ``data``) serves them all.

    With ``shard`` (see :func:`evaluation_shard`, built with this ``batch_size``), only that shard's points:
    its rows count them alone, and :func:`merge_shards` joins the shards' results. ``channels_last``: the memory
    format of the clean pass and the attacks (:func:`evaluate_adversarial`)."""
    data = batch_source(data, device)
    shard = shard or evaluation_shard(n_attacked, len(data), batch_size)
    clean = evaluate_clean(
        model, model_name, data, device, start=shard.start, stop=shard.clean_stop, channels_last=channels_last
    )
    results = {"clean": clean}
    batches = -(-max(0, shard.stop - shard.start) // batch_size) * len(plans)
    with Progress(batches, f"{model_name} attacks ({', '.join(plans)})", "batches") as counter:
        for norm, plan in plans.items():
            results[norm] = evaluate_adversarial(
                model,
                model_name,
                data,
                norm,
                eps[norm],
                plan,
                shard.stop,
                seed=seed,
                batch_size=batch_size,
                device=device,
                start=shard.start,
                counter=counter,
                channels_last=channels_last,
            )
    return results


def merge_shards(rows: Sequence[pd.DataFrame], points: Sequence[pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One threat's (row, per-point results) from its shards' (``evaluate.shards``), in shard order: the points
    concatenated, and the row counted again from them, as one unsharded evaluation writes it.

    The shards must list the points 0, 1, … in order without a gap or an overlap, and their rows must name
    the same model, split, threat, ε and attack; otherwise the merge stops naming what differs.
    """
    if not rows or len(rows) != len(points):
        raise ValueError(f"merging shards needs one row file per per-point file; got {len(rows)} and {len(points)}")
    merged = pd.concat(list(points), ignore_index=True)
    expected = range(len(merged))
    if not (merged["index"].to_numpy() == expected).all():
        listed = [f"{p['index'].min()}–{p['index'].max()}" if len(p) else "none" for p in points]
        raise ValueError(
            f"the shards' per-point files list the points {listed}; expected 0 … {len(merged) - 1} in order, "
            "each once. Rerun every shard of the model with the same evaluate.batch_size on the same kind of device."
        )
    identity = [c for c in METRIC_COLUMNS if c not in ("n", "correct", "accuracy")]
    frame = pd.concat(list(rows), ignore_index=True)
    differing = [c for c in identity if frame[c].nunique(dropna=False) > 1]
    if len(frame) != len(rows) or differing:
        raise ValueError(
            f"each shard's row file must hold one row, all naming the same evaluation; found {len(frame)} rows "
            f"for {len(rows)} shards, differing in {differing}. Rerun the model's shards."
        )
    first = frame.iloc[0]
    correct = torch.from_numpy(merged["correct"].to_numpy() != 0)
    row = metric_row(
        first["model"],
        first["evalset"],
        correct,
        threat=first["threat"],
        eps=float(first["eps"]),
        attack=first["attack"],
        corruption=first["corruption"],
        severity=int(first["severity"]),
    )
    return pd.DataFrame([row], columns=METRIC_COLUMNS), merged


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
