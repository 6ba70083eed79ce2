"""The split objects every later job reads, and reading a split's cache back.

A split is cached in one of two forms (which one, and where, is :mod:`.split_layout`'s; writing
them is :mod:`.split_writing`'s; which images each split holds is :mod:`.split_indices`'s):

* ``<split>.safetensors``: uint8 ``images`` (N, 3, R, R) and int64 ``labels``,
  decoded once (:class:`ImageSplit`); every set that is not file-backed, and
  file-backed splits of at most ``cache_max_images`` images;
* ``<split>.tsv``: a file list (path relative to the data root, label) with a
  header naming the root, resolution and resize; images are decoded on
  demand (:class:`FileSplit`). Larger file-backed splits (ImageNet).

Either form records how it was made (data set, part, images, split seed, k;
the train split also ``train_per_class``, the test split ``test_per_class``,
each empty for every image) in its header, kept in the split's ``metadata``; :func:`split_record` is what a
checkpoint's sidecar records of the split it was trained on.

Both classes offer ``labels``, ``len()``, ``load(indices)`` → uint8
(B, 3, R, R), ``as_float(n)``, ``images`` (indexable; lazy for a FileSplit),
``dataset`` and ``split``; :func:`load_split` opens either.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lazy_loader
from safetensors import SafetensorError, safe_open

from .sources import DataLayoutError, FileSource

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

SPLITS = ("train", "adapt", "test")
FILELIST_FORMAT = "robustsoup-filelist/1"


@dataclass
class ImageSplit:
    """Decoded images of one split: uint8 (N, 3, H, W) and int64 (N,) labels; ``metadata`` is the
    cache header (how the split was made, see :func:`split_record`), empty for a split built in memory;
    ``targets`` each image's set of right classes where the data set has them (ImageNet-ReaL, see
    :mod:`robustsoup.data.scoring`), else None."""

    images: torch.Tensor
    labels: torch.Tensor
    dataset: str
    split: str
    metadata: dict[str, str] = field(default_factory=dict)
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, indices: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) images at ``indices``."""
        return self.images[indices]

    def as_float(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` images in [0,1] float32 with their labels."""
        images, labels = self.images[:n], self.labels[:n]
        return images.float().div_(255.0), labels


class LazyImages:
    """``split.images`` of a :class:`FileSplit`: indexing decodes just those images."""

    def __init__(self, split: FileSplit) -> None:
        self._split = split

    def __len__(self) -> int:
        return len(self._split)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        r = self._split.resolution
        return (len(self._split), 3, r, r)

    def __getitem__(self, key) -> torch.Tensor:
        if isinstance(key, int):
            return self._split.load([key])[0]
        return self._split.load(key)


@dataclass
class FileSplit:
    """One split as a list of image files and labels, decoded on demand.

    Same interface as :class:`ImageSplit`; ``images`` is a lazy view, so
    ``split.images[idx]`` decodes only ``idx``.
    """

    paths: list[Path]
    labels: torch.Tensor
    dataset: str
    split: str
    resolution: int
    resize: int | None = None
    root: Path | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    targets: torch.Tensor | None = None
    _source: FileSource | None = field(default=None, init=False, repr=False)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def source(self) -> FileSource:
        if self._source is None:
            self._source = FileSource(self.paths, self.labels, self.resolution, self.resize)
        return self._source

    @property
    def images(self) -> LazyImages:
        return LazyImages(self)

    def load(self, indices) -> torch.Tensor:
        """uint8 (B, 3, R, R) images at ``indices``, decoded now."""
        return self.source.load(indices)

    def as_float(self, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``n`` images (all if None) in [0,1] float32 with their labels."""
        n = len(self) if n is None else min(n, len(self))
        return self.load(torch.arange(n)).float().div_(255.0), self.labels[:n]


Split = ImageSplit | FileSplit


def split_record(split: Split) -> dict[str, Any]:
    """What a checkpoint's sidecar records about the split it was trained on: data set, split, images
    and, from the cache header, the split seed and ``train_per_class`` / ``test_per_class`` (None: every
    image), whichever the header holds.

    Keys the header lacks (a split built in memory, a cache written before the key existed) are left
    out rather than guessed.
    """
    metadata = getattr(split, "metadata", None) or {}
    record: dict[str, Any] = {"dataset": split.dataset, "split": split.split, "images": len(split)}
    if metadata.get("split_seed", "") != "":
        record["split_seed"] = int(metadata["split_seed"])
    for key in ("train_per_class", "test_per_class"):
        if key in metadata:
            record[key] = int(metadata[key]) if metadata[key] else None
    if "class_names" in metadata:  # an ImageFolder's classes in label order
        record["class_names"] = json.loads(metadata["class_names"])
    return record


# ---------------------------------------------------------------------------
# Reading the caches


def read_file_list(path: str | Path) -> FileSplit:
    """Open a file-list split written by :func:`.split_writing.write_file_list`."""
    path = Path(path)
    meta: dict[str, str] = {}
    paths: list[Path] = []
    labels: list[int] = []
    targets: list[list[int]] = []
    with open(path, encoding="utf-8") as handle:
        first = handle.readline().strip()
        if first != f"# {FILELIST_FORMAT}":
            raise ValueError(
                f"data split {path}: expected a '# {FILELIST_FORMAT}' header, found {first[:60]!r}; "
                "delete it and rerun prepare_data"
            )
        for line in handle:
            line = line.rstrip("\n")
            if line.startswith("# "):
                key, _, value = line[2:].partition("=")
                meta[key] = value
                continue
            if line in ("path\tlabel", "path\tlabel\ttargets") or not line:
                continue
            if line.count("\t") == 2:  # a third column: the image's right classes
                line, _, classes = line.rpartition("\t")
                targets.append([int(c) for c in classes.split()])
            file, _, label = line.rpartition("\t")
            paths.append(Path(file))
            labels.append(int(label))
    n = int(meta.get("n", len(labels)))
    if n != len(labels):
        raise ValueError(
            f"data split {path} is truncated: header says {n} images, found {len(labels)}; "
            "delete it and rerun prepare_data"
        )
    root = Path(meta["root"]) if meta.get("root") else None
    if root is not None:
        if not root.is_dir():
            raise DataLayoutError(
                f"data split {path} lists images under {root}, which no longer exists; "
                "point data.root at the data and rerun prepare_data (or edit the '# root=' header line)"
            )
        paths = [p if p.is_absolute() else root / p for p in paths]
    if targets and len(targets) != len(labels):
        raise ValueError(f"data split {path}: {len(targets)} of {len(labels)} lines have targets; delete it and rerun")
    return FileSplit(
        paths=paths,
        labels=torch.as_tensor(labels, dtype=torch.int64),
        dataset=meta.get("dataset", "?"),
        split=meta.get("split", path.stem),
        resolution=int(meta["resolution"]),
        resize=int(meta["resize"]) if meta.get("resize") else None,
        root=root,
        metadata=meta,
        targets=_padded(targets) if targets else None,
    )


def _padded(rows: Sequence[Sequence[int]]) -> torch.Tensor:
    """Rows of class indices of different lengths as one int64 (N, L) tensor padded with -1."""
    out = torch.full((len(rows), max(len(r) for r in rows)), -1, dtype=torch.int64)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.int64)
    return out


def load_split(path: str | Path) -> Split:
    """Load a split written by :func:`.split_writing.prepare_splits`: an :class:`ImageSplit` (.safetensors) or a :class:`FileSplit` (.tsv)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data split {path} does not exist; run the workflow's prepare_data rule to create it")
    if path.suffix == ".tsv":
        return read_file_list(path)
    try:
        from safetensors.torch import load_file  # imports torch

        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"data split {path} is unreadable or truncated ({exc}); delete it and rerun") from exc
    if set(tensors) - {"targets"} != {"images", "labels"} or tensors["images"].dtype != torch.uint8:
        raise ValueError(
            f"data split {path}: expected uint8 'images', int64 'labels' (and optional 'targets'), found "
            f"{ {k: (tuple(v.shape), str(v.dtype)) for k, v in tensors.items()} }"
        )
    return ImageSplit(
        images=tensors["images"],
        labels=tensors["labels"],
        dataset=metadata.get("dataset", "?"),
        split=metadata.get("split", path.stem),
        metadata=dict(metadata),
        targets=tensors.get("targets"),
    )
