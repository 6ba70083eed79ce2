"""Data set registry: a name maps to its spec and to a reader of its splits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

# A reader returns every labelled image of the data set as uint8 (N, 3, H, W)
# images and int64 (N,) labels; the split into train / adapt / test is common.
Reader = Callable[..., tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about its data set.

    ``mean`` and ``std`` are per-channel statistics in [0,1] pixel space; the
    model normalizes its input with them, so attacks work in pixel space.
    """

    name: str
    num_classes: int
    resolution: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str
    reader: Reader = field(repr=False, compare=False)


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry under its name (names are unique)."""
    if spec.name in DATASETS:
        raise ValueError(f"data set {spec.name!r} is registered twice")
    DATASETS[spec.name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec:
    """Look a data set up by registry name, with a clear error for unknown names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown data set {name!r}; registered: {sorted(DATASETS)}") from None
