"""Splitting a data set and writing each split's cache (the data rules prepare_data and
prepare_shift): the indices of :mod:`.split_indices`, the forms and paths of :mod:`.split_layout`,
read back by :mod:`.splits`."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path

import lazy_loader

from ..io import atomic_path
from .imagefolder import split_header_fields
from .registry import DatasetSpec, get_dataset_spec, open_dataset
from .sources import Catalog, DataLayoutError, ImageSource
from .split_indices import _folder_names, adapt_test_split, stratified_split, train_subset
from .split_layout import (
    DEFAULT_CACHE_MAX_IMAGES,
    DEFAULT_K_ADAPT_PER_CLASS,
    check_test_per_class,
    part_dir,
    split_paths,
)
from .splits import FILELIST_FORMAT

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

log = logging.getLogger(__name__)


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
    :func:`.split_layout.check_test_per_class`)."""
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
    (:func:`.split_indices.train_subset`; None: all); ``test_per_class`` keeps that many
    test images per class of an official or shift set (:func:`.split_indices.adapt_test_split`;
    None: all; a stratified set raises :class:`ConfigError`, its test split
    is ``n_test``). A class with fewer stops here, before anything is
    written. ``part`` picks one part of a multi-part shift (``fog/3``).
    Returns the written paths by split name (see :func:`.split_layout.split_paths` for
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
