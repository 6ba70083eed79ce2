"""ImageNet class ids: the 1,000 wnids in class-index order and the 200-class subsets.

ImageNet-R and ImageNet-A hold 200 of the 1,000 ImageNet classes. Their
labels here are 0…199 in the sorted order of their wnids; an ImageNet
classifier is evaluated on them by keeping only the logits of those 200
classes (:func:`restrict_logits`), as the data sets' authors do. The lists
ship in ``wnids/`` (see its README for where they come from).
"""

from __future__ import annotations

from functools import cache
from importlib import resources

import lazy_loader

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

SUBSETS = ("imagenet-r", "imagenet-a")
# Tiny-ImageNet's 200 classes (its own label space: a model trained on it has 200 outputs).
WNID_LISTS = ("imagenet", *SUBSETS, "tiny-imagenet")


@cache
def read_wnids(name: str) -> tuple[str, ...]:
    """The wnids of ``imagenet`` (1,000), of a subset (``imagenet-r``, ``imagenet-a``: 200) or of
    ``tiny-imagenet`` (200), in label order."""
    if name not in WNID_LISTS:
        raise KeyError(f"no wnid list {name!r}; known: {', '.join(WNID_LISTS)}")
    text = resources.files(__package__).joinpath("wnids", f"{name}.txt").read_text(encoding="utf-8")
    wnids = tuple(line.strip() for line in text.splitlines() if line.strip())
    return wnids


def imagenet_wnids() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k wnids; position i is class index i."""
    return read_wnids("imagenet")


@cache
def wnid_to_index() -> dict[str, int]:
    """ImageNet wnid → class index (0…999)."""
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


@cache
def subset_label_map(name: str) -> dict[str, int]:
    """wnid → label (0…199) within a 200-class list (ImageNet-R, -A, Tiny-ImageNet)."""
    return {wnid: i for i, wnid in enumerate(read_wnids(name))}


@cache
def _subset_indices(name: str) -> tuple[int, ...]:
    index = wnid_to_index()
    missing = [w for w in read_wnids(name) if w not in index]
    if missing:
        raise ValueError(f"wnid list {name} has ids that are not ImageNet classes: {missing[:3]}")
    return tuple(index[w] for w in read_wnids(name))


def subset_indices(name: str) -> torch.Tensor:
    """ImageNet class index of each label of subset ``name``: label j ↔ ImageNet class ``subset_indices(name)[j]``."""
    return torch.tensor(_subset_indices(name), dtype=torch.int64)


def restrict_logits(logits: torch.Tensor, subset: str | torch.Tensor | None) -> torch.Tensor:
    """Keep the logits of a subset's classes, in its label order: (B, 1000) → (B, 200).

    ``subset`` is a subset name (``imagenet-r``), a tensor of ImageNet
    indices, or None (logits returned unchanged).
    """
    if subset is None:
        return logits
    index = subset_indices(subset) if isinstance(subset, str) else subset
    if logits.shape[-1] != 1000:
        raise ValueError(
            f"restricting logits to {subset if isinstance(subset, str) else 'a subset'} needs the 1,000 "
            f"ImageNet logits, found {logits.shape[-1]}"
        )
    return logits.index_select(-1, index.to(logits.device))
