"""Splits (train / adapt / test) and their caches, which every later job reads.

How a data set is split depends on its spec's ``split_scheme``:

* ``stratified`` (the embedded digits): one pool, split 3-way by class with
  ``n_adapt`` and ``n_test`` images (:func:`stratified_split`).
* ``official`` (CIFAR, ImageNet): train = the official training part; adapt
  = the first ``k`` images per class of the official test part under a fixed
  seed, test = the rest of it (:func:`adapt_test_split`), so the adaptation
  and test images are disjoint.
* ``shift`` (natural shifts, -C sets): no training images; each part (a
  corruption at a severity, or the whole set) gets adapt = first ``k`` per
  class, test = the rest.

With ``train_per_class`` (config ``data.train_per_class``) the training split
keeps that many images of each class, drawn from the training images alone
(:func:`train_subset`), so adapt and test are the same with or without it.
With ``test_per_class`` (``data.test_per_class``; official and shift sets
only) the test split keeps the first that many images of each class that
follow the adaptation images in the same seeded order (:func:`adapt_test_split`),
so adapt is unchanged and a smaller test split lies inside a larger one.

A split is cached in one of two forms, decided from the spec alone (so the
workflow knows the file names before reading any data, see
:func:`split_paths`):

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
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lazy_loader
from safetensors import SafetensorError, safe_open

from ..config import ConfigError
from ..io import atomic_path
from .imagefolder import split_header_fields
from .registry import DatasetSpec, get_dataset_spec, open_dataset
from .sources import Catalog, DataLayoutError, FileSource, ImageSource

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

log = logging.getLogger(__name__)

SPLITS = ("train", "adapt", "test")
FILELIST_FORMAT = "robustsoup-filelist/1"
DEFAULT_K_ADAPT_PER_CLASS = 10
DEFAULT_CACHE_MAX_IMAGES = 100_000


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
# Index splits


def _interleave(groups: list[list[int]]) -> torch.Tensor:
    """Round-robin over classes, so that any prefix is close to class-balanced."""
    longest = max((len(g) for g in groups), default=0)
    order = [g[i] for i in range(longest) for g in groups if i < len(g)]
    return torch.as_tensor(order, dtype=torch.int64)


def _per_class_permutations(labels: torch.Tensor, seed: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    classes = labels.unique(sorted=True)
    per_class = [torch.nonzero(labels == c).flatten() for c in classes]
    return [idx[torch.randperm(len(idx), generator=generator)] for idx in per_class]


def stratified_split(labels: torch.Tensor, n_adapt: int, n_test: int, seed: int) -> dict[str, torch.Tensor]:
    """Indices of train / adapt / test, each stratified by class.

    Every class contributes to adapt and test in proportion to its size
    (largest-remainder rounding); the rest is train. The test and adapt
    indices are interleaved by class, so that any prefix of them is close to
    balanced (evaluation subsets take prefixes).
    """
    n_total = int(labels.shape[0])
    if n_adapt + n_test >= n_total:
        raise ValueError(f"n_adapt + n_test = {n_adapt + n_test} leaves no training images out of {n_total}")
    per_class = _per_class_permutations(labels, seed)

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
    return {name: _interleave(groups) for name, groups in parts.items()}


def adapt_test_split(
    labels: torch.Tensor,
    k: int,
    seed: int,
    test_per_class: int | None = None,
    *,
    class_names: Callable[[list[int]], Mapping[int, str]] | None = None,
    where: str = "the test images",
) -> dict[str, torch.Tensor]:
    """adapt = the first ``k`` images of each class in a seeded order, test = the rest; disjoint.

    A class with ``k`` or fewer images gives all but one to adapt, so that
    every class stays in the test split. ``test_per_class`` keeps only the
    next that many of each class for test (None: all), so adapt does not
    depend on it and a smaller test split is a subset of a larger one; a class
    with fewer raises :class:`TestSubsetError` naming the classes and counts
    (``class_names`` maps labels to names; ``where`` names the images split).
    Both are interleaved by class.
    """
    if k < 1:
        raise ValueError(f"k (adaptation images per class) must be at least 1, found {k}")
    if test_per_class is not None and test_per_class < 1:
        raise ValueError(f"data.test_per_class must be at least 1 (or null for every image), found {test_per_class}")
    classes = labels.unique(sorted=True).tolist()
    adapt, test, short, short_test = [], [], [], {}
    for label, idx in zip(classes, _per_class_permutations(labels, seed)):
        take = min(k, len(idx) - 1)
        if take < k:
            short.append(len(idx))
        rest = idx[take:]
        if test_per_class is not None and len(rest) < test_per_class:
            short_test[label] = len(rest)
        adapt.append(idx[:take].tolist())
        test.append(rest[:test_per_class].tolist())
    if short:
        log.warning(
            "%d class(es) have at most k=%d images (smallest: %d); each keeps one image for test",
            len(short),
            k,
            min(short),
        )
    if short_test:
        names = class_names(sorted(short_test)) if class_names is not None else {}
        shown = _class_counts(short_test, names)
        raise TestSubsetError(
            f"data.test_per_class = {test_per_class} asks for {test_per_class} test images of every class of "
            f"{where}, but {len(short_test)} of {len(classes)} classes have fewer left after the {k} adaptation "
            f"images per class (data.k_adapt_per_class) ({shown}). To fix it, lower data.test_per_class to at "
            f"most {min(short_test.values())} (the smallest class), or set data.test_per_class: null to test on "
            "every image left after adapt."
        )
    return {"adapt": _interleave(adapt), "test": _interleave(test)}


class TestSubsetError(ValueError):
    """``data.test_per_class`` asks for more test images of some class than its test images hold after adapt."""

    __test__ = False  # not a pytest test class


class TrainSubsetError(ValueError):
    """``data.train_per_class`` asks for more training images of some class than the data holds."""


def train_subset(
    labels: torch.Tensor,
    candidates: torch.Tensor,
    per_class: int,
    seed: int,
    *,
    classes: Sequence[int] | None = None,
    class_names: Callable[[list[int]], Mapping[int, str]] | None = None,
    hint: str = "",
) -> torch.Tensor:
    """``per_class`` of the ``candidates`` (indices into ``labels``: the training images) of each class.

    Each class takes the first ``per_class`` of its candidates in a per-class
    order seeded by ``seed``; the candidates are sorted first, so the subset
    depends on which images are candidates, not on the order they came in
    (file-system order never enters). A smaller ``per_class`` gives a subset
    of a larger one's under the same seed. The result is interleaved by
    class, like every split, so any prefix is close to balanced.

    ``classes`` are the labels that must be present (default: those among the
    candidates); if any has fewer than ``per_class`` candidates a
    :class:`TrainSubsetError` names them and their counts (``class_names``
    maps those labels to names; ``hint`` adds what decides the number of
    training images).
    """
    if per_class < 1:
        raise ValueError(f"data.train_per_class must be at least 1 (or null for every image), found {per_class}")
    pool = torch.as_tensor(candidates, dtype=torch.int64).sort().values
    pool_labels = labels[pool]
    wanted = sorted(int(c) for c in (pool_labels.unique() if classes is None else classes))
    counts = torch.bincount(pool_labels, minlength=max(wanted, default=-1) + 1).tolist()
    short = {c: counts[c] for c in wanted if counts[c] < per_class}
    if short:
        names = class_names(sorted(short)) if class_names is not None else {}
        raise TrainSubsetError(_short_classes_message(short, len(wanted), per_class, names, hint))
    return _interleave([pool[idx[:per_class]].tolist() for idx in _per_class_permutations(pool_labels, seed)])


def _class_counts(short: Mapping[int, int], names: Mapping[int, str]) -> str:
    """``class 3 (cat): 5; …`` for the first ten classes of ``short`` (label → images found)."""
    shown = [f"class {c}{f' ({names[c]})' if c in names else ''}: {n}" for c, n in sorted(short.items())[:10]]
    more = f", … and {len(short) - 10} more" if len(short) > 10 else ""
    return "; ".join(shown) + more


def _short_classes_message(
    short: Mapping[int, int], n_classes: int, per_class: int, names: Mapping[int, str], hint: str
) -> str:
    smallest = min(short.values())
    if smallest > 0:
        fix = f"lower data.train_per_class to at most {smallest} (the smallest class)"
    else:
        fix = "check that every class has training images under data.root"
    return (
        f"data.train_per_class = {per_class} asks for {per_class} training images of every class, but "
        f"{len(short)} of {n_classes} classes have fewer ({_class_counts(short, names)}). To fix it, {fix}, "
        f"or set data.train_per_class: null to train on every training image.{hint}"
    )


def _folder_names(*sources: ImageSource) -> Callable[[list[int]], dict[int, str]]:
    """Labels → class folder names (the parent folder of a class's first image in any of the file-backed
    ``sources``), for messages; in-memory sources name nothing."""

    def names(classes: list[int]) -> dict[int, str]:
        found: dict[int, str] = {}
        for source in (s for s in sources if s.paths is not None):
            for c in (c for c in classes if c not in found):
                hit = torch.nonzero(source.labels == c).flatten()
                if len(hit):
                    found[c] = Path(source.paths[int(hit[0])]).parent.name
        return found

    return names


# ---------------------------------------------------------------------------
# Which splits, where, in which form


def splits_of(spec: DatasetSpec) -> tuple[str, ...]:
    """The splits a data set yields: train/adapt/test, or adapt/test for a shift."""
    return ("adapt", "test") if spec.is_shift else SPLITS


def nominal_split_size(
    spec: DatasetSpec,
    split: str,
    k: int,
    part: str | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> int:
    """Images in ``split`` for the published data set (from the spec, without reading data).

    ``train_per_class`` caps the train split at that many images per class,
    ``test_per_class`` the test split of an official or shift set.
    """
    adapt = k * spec.num_classes
    if split == "train" and train_per_class is not None and not spec.is_shift:
        return min(train_per_class * spec.num_classes, nominal_split_size(spec, split, k, part))
    if split == "test" and test_per_class is not None and spec.split_scheme != "stratified":
        return min(test_per_class * spec.num_classes, nominal_split_size(spec, split, k, part))
    if spec.split_scheme == "stratified":
        return spec.nominal_size(part or "all")
    if spec.split_scheme == "official":
        if split == "train":
            return spec.nominal_size(spec.train_part)
        test_total = spec.nominal_size(spec.test_part)
    else:
        test_total = spec.nominal_size(part or spec.test_part)
    return adapt if split == "adapt" else max(test_total - adapt, 0)


def split_storage(
    spec: DatasetSpec,
    split: str,
    *,
    k: int = DEFAULT_K_ADAPT_PER_CLASS,
    cache_max_images: int = DEFAULT_CACHE_MAX_IMAGES,
    part: str | None = None,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> str:
    """``safetensors`` (decoded once) or ``tsv`` (file list, decoded on demand) for one split.

    Only file-backed sets (``spec.lazy``: the ImageNet family) are ever kept
    as file lists, when their published split (the train split capped at
    ``train_per_class`` per class, the test split at ``test_per_class``) is
    larger than ``cache_max_images``.
    """
    if spec.lazy and nominal_split_size(spec, split, k, part, train_per_class, test_per_class) > cache_max_images:
        return "tsv"
    return "safetensors"


def split_paths(
    dataset: str,
    out_dir: str | Path,
    *,
    part: str | None = None,
    k_adapt_per_class: int = DEFAULT_K_ADAPT_PER_CLASS,
    cache_max_images: int = DEFAULT_CACHE_MAX_IMAGES,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> dict[str, Path]:
    """Where :func:`prepare_splits` writes each split of ``dataset`` (``part``) in ``out_dir``; reads no data.

    Pass the same ``train_per_class`` and ``test_per_class`` as to
    :func:`prepare_splits`: a small subset of a file-backed set is decoded
    (``<split>.safetensors``) where the whole split would be a file list. A
    ``test_per_class`` the data set cannot meet raises :class:`ConfigError`
    here (:func:`check_test_per_class`), so the workflow fails while it parses.
    """
    spec = get_dataset_spec(dataset)
    check_test_per_class(spec, test_per_class, k_adapt_per_class, part)
    out_dir = Path(out_dir)

    def storage(split: str) -> str:
        return split_storage(
            spec,
            split,
            k=k_adapt_per_class,
            cache_max_images=cache_max_images,
            part=part,
            train_per_class=train_per_class,
            test_per_class=test_per_class,
        )

    return {split: out_dir / f"{split}.{storage(split)}" for split in splits_of(spec)}


def check_test_per_class(spec: DatasetSpec, test_per_class: int | None, k: int, part: str | None = None) -> None:
    """Raise :class:`ConfigError` where ``data.test_per_class`` cannot apply to ``spec``'s test split.

    Reads no data: a stratified set (digits) has no official test part (its
    test split is sized by ``data.n_test``), and m images of each of C classes
    need m·C of the published test images left after adapt. Classes smaller
    than m in a large enough set are found when the data is split
    (:func:`adapt_test_split`).
    """
    if test_per_class is None:
        return
    if test_per_class < 1:
        raise ConfigError(
            f"config key 'data.test_per_class': expected an integer of at least 1 (or null for every test "
            f"image), found {test_per_class}"
        )
    classes = spec.num_classes
    if spec.split_scheme == "stratified":
        raise ConfigError(
            f"config key 'data.test_per_class': {spec.name} has no official test part, so test_per_class does "
            f"not apply; its test split is data.n_test images drawn stratified by class. Set data.n_test instead "
            f"(e.g. {test_per_class * classes} for about {test_per_class} per class of its {classes}) and leave "
            "data.test_per_class null."
        )
    available = nominal_split_size(spec, "test", k, part)
    if available <= 0 or test_per_class * classes <= available:
        return
    total = spec.nominal_size(spec.test_part if spec.split_scheme == "official" else part or spec.test_part)
    raise ConfigError(
        f"config key 'data.test_per_class': {test_per_class} test images of each of {spec.name}'s {classes} "
        f"classes need {test_per_class * classes:,} images, but its test split holds {available:,} (the "
        f"{total:,} published test images less data.k_adapt_per_class = {k} per class for adapt; about "
        f"{available // classes} per class). Lower data.test_per_class to at most {available // classes}, or "
        "set it to null to test on every image left after adapt."
    )


def part_dir(out_dir: str | Path, part: str) -> Path:
    """The folder of one part's splits: ``out_dir`` for a single-part set (``all``), else ``out_dir/<part>``."""
    return Path(out_dir) if part == "all" else Path(out_dir) / part


def shift_parts(dataset: str, corruptions=None, severities=None) -> list[str]:
    """Part names of a shift set without reading it: ``<corruption>/<severity>`` for -C sets, else ``all``."""
    spec = get_dataset_spec(dataset)
    if not spec.is_shift:
        raise ValueError(f"{dataset} is not a shifted data set (it has a training split)")
    if "*" in spec.nominal_sizes:  # corruption × severity parts
        if not corruptions:
            raise ValueError(f"{dataset} has one part per corruption and severity: name the corruptions")
        return [f"{c}/{s}" for c in corruptions for s in (severities or (1, 2, 3, 4, 5))]
    return ["all"]


# ---------------------------------------------------------------------------
# Writing and reading the caches


def _index_plan(
    spec: DatasetSpec,
    catalog: Catalog,
    part: str | None,
    n_adapt: int,
    n_test: int,
    k: int,
    seed: int,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
) -> dict[str, tuple[ImageSource, torch.Tensor]]:
    """Each split as (source, indices into it); the train split cut to ``train_per_class`` per class, the
    test split of an official or shift set to ``test_per_class`` (a stratified set refuses it, see
    :func:`check_test_per_class`)."""
    if spec.split_scheme == "stratified":
        check_test_per_class(spec, test_per_class, k, part)
        source = catalog[part or next(iter(catalog))]
        indices = stratified_split(source.labels, n_adapt=n_adapt, n_test=n_test, seed=seed)
        if train_per_class is not None:
            classes = source.labels.unique().tolist()
            indices["train"] = train_subset(
                source.labels,
                indices["train"],
                train_per_class,
                seed,
                classes=classes,
                class_names=_folder_names(source),
                hint=" (The training images are those left after data.n_adapt and data.n_test.)",
            )
        return {split: (source, idx) for split, idx in indices.items()}
    if spec.split_scheme == "official":
        for needed in (spec.train_part, spec.test_part):
            if needed not in catalog:
                raise DataLayoutError(f"{spec.name}: the data has no {needed!r} part.\nExpected layout:\n{spec.layout}")
        train, test = catalog[spec.train_part], catalog[spec.test_part]
        train_idx = torch.arange(len(train))
        if train_per_class is not None:
            # Every class of the data set, so a class with test images but no training images is named too.
            classes = torch.cat([train.labels, test.labels]).unique().tolist()
            train_idx = train_subset(
                train.labels, train_idx, train_per_class, seed, classes=classes, class_names=_folder_names(train, test)
            )
        plan = {"train": (train, train_idx)}
        held_out = adapt_test_split(
            test.labels,
            k,
            seed,
            test_per_class,
            class_names=_folder_names(test),
            where=f"{spec.name}'s {spec.test_part!r} part",
        )
        plan.update({split: (test, idx) for split, idx in held_out.items()})
        return plan
    if part is None:
        if len(catalog) != 1:
            raise ValueError(f"{spec.name} has {len(catalog)} parts; name one (e.g. {next(iter(catalog))!r})")
        part = next(iter(catalog))
    source = catalog[part]
    where = spec.name if part == "all" else f"{spec.name} part {part!r}"
    held_out = adapt_test_split(source.labels, k, seed, test_per_class, class_names=_folder_names(source), where=where)
    return {split: (source, idx) for split, idx in held_out.items()}


def _metadata(
    dataset: str,
    split: str,
    part: str | None,
    n: int,
    seed: int,
    k: int,
    root,
    train_per_class: int | None,
    test_per_class: int | None = None,
) -> dict[str, str]:
    """A split's header; the train split's names its ``train_per_class``, the test split's its
    ``test_per_class`` ('' = every image)."""
    metadata = {
        "dataset": dataset,
        "split": split,
        "part": part or "",
        "n": str(n),
        "split_seed": str(seed),
        "k_adapt_per_class": str(k),
        "root": str(root or ""),
    }
    if split == "train":
        metadata["train_per_class"] = "" if train_per_class is None else str(train_per_class)
    if split == "test":
        metadata["test_per_class"] = "" if test_per_class is None else str(test_per_class)
    return metadata


def write_decoded_split(
    path: Path, source: ImageSource, indices: torch.Tensor, metadata: Mapping[str, str], batch_size: int = 1024
) -> Path:
    """Decode ``source[indices]`` once into ``path`` (safetensors, uint8 images + int64 labels), atomically."""
    r = source.resolution
    images = torch.empty((len(indices), 3, r, r), dtype=torch.uint8)
    start_time, last = time.perf_counter(), time.perf_counter()
    for offset, batch in source.iter_batches(indices, batch_size):
        images[offset : offset + len(batch)] = batch
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            log.info("%s: decoded %d / %d images", path.name, offset + len(batch), len(indices))
    tensors = {"images": images, "labels": source.labels[indices].contiguous()}
    if source.targets is not None:
        tensors["targets"] = source.targets[indices].contiguous()
    with atomic_path(path) as tmp:
        from safetensors.torch import save_file  # imports torch

        save_file(tensors, str(tmp), metadata=dict(metadata))
    log.info("wrote %s: %d images in %.1fs", path, len(indices), time.perf_counter() - start_time)
    return path


def write_file_list(
    path: Path,
    source: ImageSource,
    indices: torch.Tensor,
    metadata: Mapping[str, str],
    root: Path | None,
    resize: int | None,
) -> Path:
    """Write the files of ``source[indices]`` and their labels as a TSV, atomically.

    Paths are relative to ``root`` (named in the header) where possible, so a
    moved data root needs only the header changed. A source with ``targets``
    gets a third column: each image's right classes, space-separated.
    """
    if source.paths is None:
        raise ValueError(f"{path}: the source holds no image files; it can only be cached decoded")
    root = Path(root).resolve() if root is not None else None
    header = [f"# {FILELIST_FORMAT}"]
    meta = dict(metadata, resolution=str(source.resolution), resize=str(resize or ""), root=str(root or ""))
    header += [f"# {key}={value}" for key, value in meta.items()]
    lines = header + ["path\tlabel" + ("\ttargets" if source.targets is not None else "")]
    labels = source.labels[indices].tolist()
    targets = source.targets[indices].tolist() if source.targets is not None else None
    for row, (i, label) in enumerate(zip(indices.tolist(), labels)):
        file = Path(source.paths[i])
        if root is not None:
            try:
                file = file.resolve().relative_to(root)
            except ValueError:
                file = file.resolve()
        text = str(file)
        if "\t" in text or "\n" in text:
            raise DataLayoutError(f"image path {text!r} contains a tab or newline; rename the file")
        extra = "" if targets is None else "\t" + " ".join(str(t) for t in targets[row] if t >= 0)
        lines.append(f"{text}\t{label}{extra}")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    log.info("wrote %s: file list of %d images", path, len(indices))
    return path


def prepare_splits(
    dataset: str,
    out_dir: str | Path,
    n_adapt: int = 200,
    n_test: int = 450,
    seed: int = 0,
    *,
    root: str | Path | None = None,
    part: str | None = None,
    k_adapt_per_class: int = DEFAULT_K_ADAPT_PER_CLASS,
    cache_max_images: int = DEFAULT_CACHE_MAX_IMAGES,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    catalog: Catalog | None = None,
) -> dict[str, Path]:
    """Read ``dataset`` (under ``root``), split it and cache each split in ``out_dir``.

    ``n_adapt`` / ``n_test`` apply to stratified sets (digits);
    ``k_adapt_per_class`` to sets with an official test part and to shifts.
    ``train_per_class`` keeps that many training images per class
    (:func:`train_subset`; None: all); ``test_per_class`` keeps that many
    test images per class of an official or shift set (:func:`adapt_test_split`;
    None: all; a stratified set raises :class:`ConfigError`, its test split
    is ``n_test``). A class with fewer stops here, before anything is
    written. ``part`` picks one part of a multi-part shift (``fog/3``).
    Returns the written paths by split name (see :func:`split_paths` for
    their form).
    """
    spec = get_dataset_spec(dataset)
    if spec.is_shift and train_per_class is not None:
        raise ValueError(f"{dataset} is a shifted data set without training images; train_per_class must be None")
    targets = split_paths(  # before reading data: refuses a test_per_class the data set cannot meet
        dataset,
        out_dir,
        part=part,
        k_adapt_per_class=k_adapt_per_class,
        cache_max_images=cache_max_images,
        train_per_class=train_per_class,
        test_per_class=test_per_class,
    )
    catalog = catalog if catalog is not None else open_dataset(dataset, root)
    plan = _index_plan(spec, catalog, part, n_adapt, n_test, k_adapt_per_class, seed, train_per_class, test_per_class)
    for split, (source, indices) in plan.items():
        path = targets[split]
        metadata = _metadata(
            dataset,
            split,
            part,
            len(indices),
            seed,
            k_adapt_per_class,
            catalog.root,
            train_per_class,
            test_per_class,
        )
        metadata.update(split_header_fields(spec, split, source, indices))  # an ImageFolder's classes, statistics
        if path.suffix == ".tsv":
            write_file_list(path, source, indices, metadata, catalog.root, spec.resize)
        else:
            write_decoded_split(path, source, indices, metadata)
    return targets


def prepare_shift_splits(
    dataset: str,
    root: str | Path,
    out_dir: str | Path,
    parts: list[str] | None = None,
    *,
    seed: int = 0,
    k_adapt_per_class: int = DEFAULT_K_ADAPT_PER_CLASS,
    cache_max_images: int = DEFAULT_CACHE_MAX_IMAGES,
    test_per_class: int | None = None,
) -> dict[str, dict[str, Path]]:
    """Adapt / test splits of every part of a shifted set (all found on disk if ``parts`` is None).

    Part ``all`` is written to ``out_dir``, part ``fog/3`` to ``out_dir/fog/3``;
    each part's test split keeps ``test_per_class`` images per class (None: all).
    """
    catalog = open_dataset(dataset, root)
    missing = [p for p in (parts or []) if p not in catalog]
    if missing:
        raise DataLayoutError(
            f"{dataset} at {catalog.root}: part(s) {missing[:5]} not found (found {len(catalog)} parts, "
            f"e.g. {list(catalog)[:3]}).\nExpected layout:\n{get_dataset_spec(dataset).layout}"
        )
    written = {}
    for part in parts or list(catalog):
        written[part] = prepare_splits(
            dataset,
            part_dir(out_dir, part),
            seed=seed,
            part=part,
            k_adapt_per_class=k_adapt_per_class,
            cache_max_images=cache_max_images,
            test_per_class=test_per_class,
            catalog=catalog,
        )
    return written


def read_file_list(path: str | Path) -> FileSplit:
    """Open a file-list split written by :func:`write_file_list`."""
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
    """Load a split written by :func:`prepare_splits`: an :class:`ImageSplit` (.safetensors) or a :class:`FileSplit` (.tsv)."""
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
