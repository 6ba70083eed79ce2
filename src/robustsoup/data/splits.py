"""Stratified splits and the decoded uint8 cache that every later job reads."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from ..io import atomic_path
from .registry import get_dataset_spec

SPLITS = ("train", "adapt", "test")


@dataclass
class ImageSplit:
    """Decoded images of one split: uint8 (N, 3, H, W) and int64 (N,) labels."""

    images: torch.Tensor
    labels: torch.Tensor
    dataset: str
    split: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def as_float(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` images in [0,1] float32 with their labels."""
        images, labels = self.images[:n], self.labels[:n]
        return images.float().div_(255.0), labels


def stratified_split(
    labels: torch.Tensor, n_adapt: int, n_test: int, seed: int
) -> dict[str, torch.Tensor]:
    """Indices of train / adapt / test, each stratified by class.

    Every class contributes to adapt and test in proportion to its size
    (largest-remainder rounding); the rest is train. The test and adapt
    indices are interleaved by class, so that any prefix of them is close to
    balanced (evaluation subsets take prefixes).
    """
    n_total = int(labels.shape[0])
    if n_adapt + n_test >= n_total:
        raise ValueError(
            f"n_adapt + n_test = {n_adapt + n_test} leaves no training images out of {n_total}"
        )
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique(sorted=True)
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    per_class = [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class]

    def quota(total: int) -> list[int]:
        exact = [total * len(idx) / n_total for idx in per_class]
        counts = [int(e) for e in exact]
        order = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
        for i in order[: total - sum(counts)]:
            counts[i] += 1
        return counts

    test_counts, adapt_counts = quota(n_test), quota(n_adapt)
    parts: dict[str, list[list[int]]] = {"train": [], "adapt": [], "test": []}
    for idx, n_te, n_ad in zip(per_class, test_counts, adapt_counts):
        parts["test"].append(idx[:n_te].tolist())
        parts["adapt"].append(idx[n_te : n_te + n_ad].tolist())
        parts["train"].append(idx[n_te + n_ad :].tolist())

    def interleave(groups: list[list[int]]) -> torch.Tensor:
        longest = max(len(g) for g in groups)
        order = [g[i] for i in range(longest) for g in groups if i < len(g)]
        return torch.as_tensor(order, dtype=torch.int64)

    return {name: interleave(groups) for name, groups in parts.items()}


def prepare_splits(dataset: str, out_dir: str | Path, n_adapt: int, n_test: int, seed: int) -> dict[str, Path]:
    """Read ``dataset`` once, split it and write one safetensors file per split.

    Returns the written paths by split name. Each file holds ``images``
    (uint8) and ``labels`` (int64) with the data set and split in its metadata.
    """
    spec = get_dataset_spec(dataset)
    images, labels = spec.reader()
    indices = stratified_split(labels, n_adapt=n_adapt, n_test=n_test, seed=seed)
    out_dir = Path(out_dir)
    paths = {}
    for split, idx in indices.items():
        path = out_dir / f"{split}.safetensors"
        metadata = {"dataset": dataset, "split": split, "n": str(len(idx)), "split_seed": str(seed)}
        with atomic_path(path) as tmp:
            save_file(
                {"images": images[idx].contiguous(), "labels": labels[idx].contiguous()},
                str(tmp),
                metadata=metadata,
            )
        paths[split] = path
    return paths


def load_split(path: str | Path) -> ImageSplit:
    """Load a split written by :func:`prepare_splits`, checking what it holds."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"data split {path} does not exist; run the workflow's prepare_data rule to create it"
        )
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"data split {path} is unreadable or truncated ({exc}); delete it and rerun") from exc
    if set(tensors) != {"images", "labels"} or tensors["images"].dtype != torch.uint8:
        raise ValueError(
            f"data split {path}: expected uint8 'images' and int64 'labels', found "
            f"{ {k: (tuple(v.shape), str(v.dtype)) for k, v in tensors.items()} }"
        )
    return ImageSplit(
        images=tensors["images"],
        labels=tensors["labels"],
        dataset=metadata.get("dataset", "?"),
        split=metadata.get("split", path.stem),
    )
