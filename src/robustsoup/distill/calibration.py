"""Which shifted images calibrate the head rule ``ours`` (``distill.selection.calibration``).

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

from collections.abc import Callable, Iterable, Iterator, Mapping

import torch

from .config import CALIBRATIONS
from .method import AugmentInputs

_CHUNK = 256
_SEED_OFFSET = 7919  # the calibration's draws are not the training stream's (seed + 0…)


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
