"""Training augmentation: random crops and horizontal flips of a whole batch, on its device.

What ``augmentation: standard`` means is the data set's
(:attr:`robustsoup.data.registry.DatasetSpec.augmentation`): CIFAR's
zero-padded random crop (4 pixels) and flip, ImageNet's random-resized crop
(8–100 % of the area, aspect ratio 3/4–4/3) and flip, the digits' crop
without flips. ``crop`` applies the crop alone, ``none`` nothing. The random
numbers are drawn per image from a CPU generator seeded by the training seed
(the same crops on every device) and saved with the epoch state, so a
resumed run sees the crops an uninterrupted one would; the images are cut
with tensor ops on the batch's device (an index gather for padded crops, a
bilinear affine resampling for resized ones, ``torch.where`` for flips). The
epoch loop applies it before the input policy, so an attack perturbs the
augmented image, as the references train.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from ..data import get_dataset_spec
from ..data.registry import TrainAugmentation

AUGMENTATIONS = ("standard", "crop", "none")
RESIZED_CROP_TRIES = 10  # draws per image before falling back to the central crop (as torchvision)


class BatchAugmentation:
    """Random crops (and flips, with ``flip``) of [0,1] image batches (N, C, H, W); shapes are kept."""

    def __init__(self, spec: TrainAugmentation, flip: bool, seed: int = 0) -> None:
        self.spec = spec
        self.flip = flip
        self.generator = torch.Generator().manual_seed(seed + 4)
        self.name = spec.describe(flip)

    def __call__(self, x: torch.Tensor, rows: slice | None = None, total: int | None = None) -> torch.Tensor:
        """``x`` cropped (and flipped). ``rows`` of a batch of ``total``: ``x`` is that slice of a larger batch
        (a data-parallel rank's shard), and gets the crops of those rows of the whole batch's draws (the
        generator advances by the whole batch's, so every rank stays in step)."""
        rows = slice(None) if rows is None else rows
        total = len(x) if total is None else total
        if self.spec.crop == "pad":
            x = self._pad_crop(x, rows, total)
        else:
            x = self._resized_crop(x, rows, total)
        if self.flip:
            flipped = (torch.rand(total, generator=self.generator)[rows] < 0.5).to(x.device)
            x = torch.where(flipped.view(-1, 1, 1, 1), x.flip(-1), x)
        return x

    def _pad_crop(self, x: torch.Tensor, rows: slice, total: int) -> torch.Tensor:
        """A window of the original size at a random offset of the zero-padded image (RandomCrop with padding)."""
        n, c, h, w = x.shape
        p = self.spec.padding
        offsets = torch.randint(0, 2 * p + 1, (2, total), generator=self.generator)[:, rows].to(x.device)
        padded = F.pad(x, (p, p, p, p))
        rows = (offsets[0].view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (offsets[1].view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        images = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        channels = torch.arange(c, device=x.device).view(1, c, 1, 1)
        return padded[images, channels, rows, cols]

    def _resized_crop(self, x: torch.Tensor, rows: slice, total: int) -> torch.Tensor:
        """A random window (area fraction in ``scale``, log-uniform aspect ratio in ``ratio``, whole pixels)
        resized bilinearly back to H × W; images with no fitting draw get the central crop (RandomResizedCrop)."""
        n, _, h, w = x.shape
        scale, ratio = self.spec.scale, self.spec.ratio
        tries = (total, RESIZED_CROP_TRIES)
        area = h * w * torch.empty(tries, dtype=torch.float64).uniform_(*scale, generator=self.generator)[rows]
        log_ratio = torch.empty(tries, dtype=torch.float64).uniform_(
            math.log(ratio[0]), math.log(ratio[1]), generator=self.generator
        )[rows]
        crop_w = (area * log_ratio.exp()).sqrt().round()
        crop_h = (area / log_ratio.exp()).sqrt().round()
        fits = (crop_w >= 1) & (crop_w <= w) & (crop_h >= 1) & (crop_h <= h)
        first = fits.double().argmax(1, keepdim=True)
        crop_w, crop_h, found = crop_w.gather(1, first)[:, 0], crop_h.gather(1, first)[:, 0], fits.any(1)
        position = torch.rand(total, 2, dtype=torch.float64, generator=self.generator)[rows]
        top = (position[:, 0] * (h - crop_h + 1)).floor()
        left = (position[:, 1] * (w - crop_w + 1)).floor()
        central_w, central_h = _central_crop(h, w, ratio)
        crop_w = torch.where(found, crop_w, float(central_w))
        crop_h = torch.where(found, crop_h, float(central_h))
        top = torch.where(found, top, float((h - central_h) // 2))
        left = torch.where(found, left, float((w - central_w) // 2))
        # Output pixel centres onto the window's, clamped to it (resizing the cut window), in grid_sample's
        # normalised coordinates (align_corners=False).
        rows = _window_coordinates(top, crop_h, h).to(x.device, x.dtype)
        cols = _window_coordinates(left, crop_w, w).to(x.device, x.dtype)
        grid = torch.stack((cols[:, None, :].expand(n, h, w), rows[:, :, None].expand(n, h, w)), dim=-1)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def _window_coordinates(start: torch.Tensor, length: torch.Tensor, size: int) -> torch.Tensor:
    """(N, size) normalised source coordinates of ``size`` output pixels resampling the window
    [start, start + length) of a ``size``-pixel axis bilinearly (as F.interpolate resizes the cut window)."""
    out = torch.arange(size, dtype=torch.float64)
    source = start[:, None] + (out + 0.5) * (length[:, None] / size) - 0.5
    source = torch.maximum(torch.minimum(source, (start + length - 1)[:, None]), start[:, None])
    return (source + 0.5) * 2 / size - 1


def _central_crop(h: int, w: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """(width, height) of torchvision's fallback: the whole image, cut to the nearest allowed aspect ratio."""
    if w / h < ratio[0]:
        return w, round(w / ratio[0])
    if w / h > ratio[1]:
        return round(h * ratio[1]), h
    return w, h


def batch_augmentation(mode: str, dataset: str, seed: int = 0) -> BatchAugmentation | None:
    """The augmentation ``mode`` (see :data:`AUGMENTATIONS`) means for ``dataset``'s training images; None for none."""
    if mode not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {mode!r}; expected one of {', '.join(AUGMENTATIONS)}")
    if mode == "none":
        return None
    spec = get_dataset_spec(dataset).augmentation
    return BatchAugmentation(spec, flip=spec.flip and mode == "standard", seed=seed)


def describe_augmentation(mode: str, dataset: str) -> str:
    """What ``mode`` does to ``dataset``'s training images, in the words of the sidecars (``none`` for none)."""
    augmentation = batch_augmentation(mode, dataset)
    return augmentation.name if augmentation is not None else "none"
