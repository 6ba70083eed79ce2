"""Which splits a data set yields, where each is cached and in which form; reads no data.

The form is decided from the spec alone (so the workflow knows the file names before reading any
data, see :func:`split_paths`): ``<split>.safetensors`` (decoded once) or ``<split>.tsv`` (a file
list, decoded on demand; :mod:`.splits`).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .registry import DatasetSpec, get_dataset_spec
from .splits import SPLITS

DEFAULT_K_ADAPT_PER_CLASS = 10
DEFAULT_CACHE_MAX_IMAGES = 100_000


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
    larger than ``cache_max_images``, and the splits the spec names in ``file_lists``.
    """
    if split in spec.file_lists:
        return "tsv"
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
    """Where :func:`.split_writing.prepare_splits` writes each split of ``dataset`` (``part``) in ``out_dir``; reads no data.

    Pass the same ``train_per_class`` and ``test_per_class`` as to
    :func:`.split_writing.prepare_splits`: a small subset of a file-backed set is decoded
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
    (:func:`.split_indices.adapt_test_split`).
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
