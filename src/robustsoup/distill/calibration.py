"""Calibrating the head rule ``ours``: its thresholds, and which shifted images choose them.

``θ_u`` and ``θ_kl`` are chosen on the adaptation split (clean and corrupted)
by :func:`calibrate_thresholds`: a grid of quantiles of the observed values
(plus "never" and "always"), maximising ``clean_weight · clean accuracy +
(1 − clean_weight) · corrupted accuracy`` among the thresholds whose clean
accuracy is at most ``max_clean_drop`` below the clean head's. Ties go to the
larger thresholds (more inputs to the clean head). The paper publishes none
of these constants; the defaults are in the config schema (``distill``).

Which shifted images (``distill.selection.calibration``).

The thresholds of ``ours`` are chosen on labelled adaptation images, clean and shifted. Which
shifted images is the question here; the paper (Jain et al. 2023, seed 002) trains the robust head
on shifted data from the teacher's augmentation and evaluates on corruptions it never trained on,
and says nothing about data for the rule. So:

- ``held-out`` (default): the adaptation images shifted by the distillation's own shift,
  ``distill.augmentation`` (AugMix and its held-out corruptions: what the robust head learns on),
  ``calibration_copies`` independent draws of each image, seeded. None of the evaluated corruption
  types (``data.corruptions``) is seen: :func:`robustsoup.distill.config.check_distill_config` refuses
  a held-out calibration whose augmentation draws one of them.
- ``evaluated``: the adaptation split's copies corrupted by the very corruptions and severities the
  table evaluates (the first ``n_adapt_images`` of each) — the earlier rule. It leaks the test
  shifts into the thresholds; an explicit ablation, labelled as such in the table's note.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Mapping

import torch

from ..models.multihead import HEADS
from .augmentation import AugmentInputs
from .config import CALIBRATIONS
from .heads import HeadSignals, Thresholds, ours_choice

log = logging.getLogger(__name__)

_CHUNK = 256
_SEED_OFFSET = 7919  # the calibration's draws are not the training stream's (seed + 0…)
_CLEAN = HEADS.index("clean")


def held_out_policy(config: Mapping) -> AugmentInputs:
    """``distill.augmentation`` with every image shifted (no clean fraction), on its own seeded stream."""
    a = config["distill"]["augmentation"]
    return AugmentInputs(
        a["kind"], a["corruptions"], a["severities"], 0.0, a["augmix_severity"], config["seed"] + _SEED_OFFSET
    )


def held_out_shifted(config: Mapping, images, labels: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) chunks: ``calibration_copies`` shifted draws of every adaptation image.

    ``images`` is uint8 (N, 3, H, W) or a file-list split's lazy view (decoded a chunk at a time).
    """
    policy = held_out_policy(config)
    for _ in range(config["distill"]["selection"]["calibration_copies"]):
        for start in range(0, len(labels), _CHUNK):
            x = images[start : start + _CHUNK]
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            shifted = policy(None, x, None)
            yield (shifted * 255).round_().to(torch.uint8), labels[start : start + _CHUNK]


def calibration_shifted(
    config: Mapping,
    images,
    labels: torch.Tensor,
    evaluated_sets: Callable[[int], Iterable[tuple[str, int, object, torch.Tensor]]],
) -> Iterator[tuple[object, torch.Tensor]]:
    """The shifted (images, labels) that calibrate the head rule, as ``distill.selection.calibration`` says.

    ``evaluated_sets(n)`` yields (corruption, severity, images, labels) of the first ``n`` corrupted
    adaptation copies of every evaluated corruption and severity; only ``evaluated`` reads it.
    """
    selection = config["distill"]["selection"]
    if selection["calibration"] == "evaluated":
        for _, _, shifted, y in evaluated_sets(selection["n_adapt_images"]):
            yield shifted, y
        return
    if selection["calibration"] != "held-out":
        raise ValueError(f"unknown calibration {selection['calibration']!r}; expected one of {CALIBRATIONS}")
    yield from held_out_shifted(config, images, labels)


def _candidates(values: torch.Tensor, quantiles: int) -> list[float]:
    levels = torch.linspace(0, 1, quantiles, dtype=torch.float64)
    qs = torch.quantile(values.double(), levels).tolist() if len(values) else []
    return sorted({-1.0, *qs, math.inf})


def calibrate_thresholds(
    clean: HeadSignals,
    clean_labels: torch.Tensor,
    shifted: HeadSignals,
    shifted_labels: torch.Tensor,
    clean_weight: float = 0.5,
    max_clean_drop: float = 0.005,
    quantiles: int = 21,
    uncertainty: float | None = None,
    divergence: float | None = None,
) -> tuple[Thresholds, dict]:
    """Thresholds of ``ours`` chosen on labelled clean and shifted inputs (the adaptation split).

    Maximises ``clean_weight · clean accuracy + (1 − clean_weight) · shifted
    accuracy`` over a grid (``quantiles`` quantiles of the observed values,
    plus "never" and "always") among the thresholds whose clean accuracy is at
    most ``max_clean_drop`` below the clean head's; ties go to the larger
    thresholds. A threshold given as a number is kept fixed. Returns the
    thresholds and a record of the search.
    """
    if not 0 <= clean_weight <= 1:
        raise ValueError(f"clean_weight must be in [0, 1], found {clean_weight}")
    if max_clean_drop < 0:
        raise ValueError(f"max_clean_drop must be ≥ 0, found {max_clean_drop}")
    if quantiles < 2:
        raise ValueError(f"quantiles must be at least 2, found {quantiles}")
    both = HeadSignals.cat([clean, shifted])
    u_grid = [float(uncertainty)] if uncertainty is not None else _candidates(both.uncertainty[_CLEAN], quantiles)
    d_grid = [float(divergence)] if divergence is not None else _candidates(both.divergence, quantiles)
    correct_c = clean.logits.argmax(-1) == clean_labels.view(1, -1)
    correct_s = shifted.logits.argmax(-1) == shifted_labels.view(1, -1)
    floor = correct_c[_CLEAN].double().mean().item() - max_clean_drop
    best, best_score, best_acc = None, -math.inf, None
    for u in sorted(u_grid, reverse=True):
        for d in sorted(d_grid, reverse=True):
            t = Thresholds(u, d)
            acc_c = correct_c.gather(0, ours_choice(clean, t).view(1, -1)).double().mean().item()
            acc_s = correct_s.gather(0, ours_choice(shifted, t).view(1, -1)).double().mean().item()
            if acc_c < floor - 1e-12:
                continue
            score = clean_weight * acc_c + (1 - clean_weight) * acc_s
            if score > best_score + 1e-12:
                best, best_score, best_acc = t, score, (acc_c, acc_s)
    if best is None:  # only when both thresholds are fixed and violate the clean floor
        best = Thresholds(u_grid[0], d_grid[0])
        best_acc = (
            correct_c.gather(0, ours_choice(clean, best).view(1, -1)).double().mean().item(),
            correct_s.gather(0, ours_choice(shifted, best).view(1, -1)).double().mean().item(),
        )
        best_score = clean_weight * best_acc[0] + (1 - clean_weight) * best_acc[1]
        log.warning("the fixed thresholds lose more than max_clean_drop of clean accuracy on the adaptation split")
    record = {
        "uncertainty": _finite(best.uncertainty),
        "divergence": _finite(best.divergence),
        "objective": best_score,
        "adapt_clean_accuracy": best_acc[0],
        "adapt_shifted_accuracy": best_acc[1],
        "adapt_clean_head_clean_accuracy": floor + max_clean_drop,
        "grid": [len(u_grid), len(d_grid)],
        "n_clean": len(clean),
        "n_shifted": len(shifted),
    }
    return best, record


def _finite(value: float) -> float | None:
    """JSON-friendly threshold: None for "always" (+∞)."""
    return None if math.isinf(value) else value
