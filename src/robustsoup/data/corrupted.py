"""Corrupted copies of a split on disk, in the layout that suits the split (rule ``corrupt_split``).

Two layouts, one per form of split cache (:mod:`.splits`):

- a split decoded to tensors (``<split>.safetensors``: digits, CIFAR, small ImageNet subsets) gets
  Hendrycks' CIFAR-10-C layout, ``<dir>/<corruption>.npy`` + ``labels.npy``
  (:func:`.corruptions.write_corrupted_split`);
- a file-list split (``<split>.tsv``: the ImageNet family) gets the ImageNet-C layout,
  ``<dir>/<corruption>/<severity>/<class folder>/<file>``: one JPEG (quality 85, as the reference
  ``make_imagenet_c.py`` saves them) per image, corruption and severity, named after the split's
  image (an ImageNet validation image keeps its name, ``ILSVRC2012_val_00000001.JPEG``). The split
  is decoded and corrupted in chunks, so memory stays bounded whatever its size.

:func:`corrupted_split` opens one corruption at one severity of either layout as a split in the
clean split's order and with its labels: an :class:`.splits.ImageSplit` (the arrays) or a
:class:`.splits.FileSplit` over the copies (decoded on demand, in batches, by the file-list
machinery), so readers stream a file-list split whatever its size. Because the copies of the
ImageNet-C layout are found by name, Hendrycks' released ImageNet-C — the corrupted copies of the
validation images of the same names — can stand in for generated ones (``data.corrupted_from``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import lazy_loader
import numpy as np

from .corruptions import (
    CORRUPTIONS,
    SEVERITIES,
    _check_corruption,
    _check_severity,
    corrupt,
    read_corrupted_split,
    write_corrupted_split,
)
from .readers import corruption_folders
from .sources import DataLayoutError, list_images
from .splits import FileSplit, ImageSplit, Split

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

log = logging.getLogger(__name__)

JPEG_QUALITY = 85  # make_imagenet_c.py: Image.save(..., quality=85, optimize=True)
JPEG_SUFFIXES = (".jpeg", ".jpg")
IMAGENET_C_LAYOUT = "<dir>/<corruption>/<severity>/<class folder>/<image file> (ImageNet-C layout)"


def copy_names(split: FileSplit) -> list[str]:
    """``<class folder>/<file>`` of each image's corrupted copy: the clean file's folder and name, with a
    ``.JPEG`` suffix where the file is not a JPEG already (the copies are JPEGs)."""
    names = []
    for path in split.paths:
        path = Path(path)
        name = path.name if path.suffix.lower() in JPEG_SUFFIXES else f"{path.stem}.JPEG"
        names.append(f"{path.parent.name}/{name}")
    if len(set(names)) != len(names):
        seen: set[str] = set()
        twice = sorted({n for n in names if n in seen or seen.add(n)})
        raise DataLayoutError(
            f"{split.dataset} {split.split}: {len(twice)} image(s) would share a corrupted copy's name in the "
            f"ImageNet-C layout (same class folder and file name, e.g. {twice[:3]}); rename the image files so "
            "that each class folder holds distinct names (ignoring the extension)"
        )
    return names


def _levels(corruptions: Iterable[str], severities: Iterable[int]) -> tuple[list[str], list[int]]:
    """The corruptions and the distinct severities in increasing order, each checked as the npy writer does."""
    names = [_check_corruption(c) for c in corruptions]
    levels = sorted({_check_severity(s) for s in severities})
    if not names or not levels:
        raise ValueError(f"need at least one corruption and one severity, found {names} and {levels}")
    return names, levels


def write_corrupted_files(
    split: FileSplit,
    out_dir: str | os.PathLike,
    corruptions: Iterable[str] = CORRUPTIONS,
    severities: Iterable[int] = SEVERITIES,
    seed: int = 0,
    *,
    constants: str | None = None,
    chunk_size: int = 64,
) -> dict[str, Path]:
    """Corrupt every image of a file-list split and write the copies in the ImageNet-C layout.

    ``chunk_size`` images are decoded at a time (at the split's resolution, as every reader sees
    them), corrupted at every corruption and severity — image i draws from its own generator
    keyed by (``seed``, corruption, severity, i), so the bytes do not depend on the chunking — and
    saved as JPEG quality 85. Returns ``{corruption: its folder}``. A failed job leaves a partial
    folder, which Snakemake removes (the rule's output is the whole folder).
    """
    names, levels = _levels(corruptions, severities)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, found {chunk_size}")
    relative = copy_names(split)
    out = Path(out_dir)
    folders = {rel.rsplit("/", 1)[0] for rel in relative}
    for name in names:
        for level in levels:
            for folder in folders:
                (out / name / str(level) / folder).mkdir(parents=True, exist_ok=True)
    from PIL import Image

    n, start_time, last = len(split), time.perf_counter(), time.perf_counter()
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        nhwc = np.ascontiguousarray(split.load(torch.arange(start, stop)).permute(0, 2, 3, 1).numpy())
        for name in names:
            for level in levels:
                copies = corrupt(nhwc, name, level, seed, constants=constants, layout="NHWC", index_offset=start)
                for i, array in enumerate(copies):
                    path = out / name / str(level) / relative[start + i]
                    Image.fromarray(array).save(path, format="JPEG", quality=JPEG_QUALITY, optimize=True)
        if time.perf_counter() - last > 30:
            last = time.perf_counter()
            log.info("%s: corrupted %d / %d images", out, stop, n)
    log.info(
        "wrote %s: %d images × %d corruptions × %d severities in %.1fs",
        out,
        n,
        len(names),
        len(levels),
        time.perf_counter() - start_time,
    )
    return {name: out / name for name in names}


def write_corrupted_copies(
    split: Split,
    out_dir: str | os.PathLike,
    corruptions: Iterable[str] = CORRUPTIONS,
    severities: Iterable[int] = SEVERITIES,
    seed: int = 0,
    *,
    constants: str | None = None,
) -> dict[str, Path]:
    """The corrupted copies of ``split`` in its layout: Hendrycks' ``.npy`` arrays for a decoded split,
    ImageNet-C folders of JPEGs for a file list (:func:`write_corrupted_files`)."""
    if isinstance(split, FileSplit):
        return write_corrupted_files(split, out_dir, corruptions, severities, seed, constants=constants)
    return write_corrupted_split(
        split.images, split.labels, out_dir, corruptions, sorted(set(severities)), seed, constants=constants
    )


def corrupted_split(
    directory: str | os.PathLike, clean: Split, corruption: str, severity: int, severities: Sequence[int]
) -> Split:
    """The corrupted copies of ``clean`` at one corruption and severity, in ``clean``'s order and with its labels
    (and label sets, ``targets``, where it has them).

    ``directory`` holds either layout: ``labels.npy`` + ``<corruption>.npy`` (``severities`` are the
    severities the arrays hold, in row order; the labels must be the clean split's) → an
    :class:`ImageSplit`; otherwise ``<corruption>/<severity>/<class folder>/<file>`` (written by
    :func:`write_corrupted_files`, or Hendrycks' ImageNet-C, also unpacked by family, e.g.
    ``blur/defocus_blur/3/``) → a :class:`FileSplit` over the copies of ``clean``'s files, decoded on
    demand. Missing folders or files raise :class:`DataLayoutError` naming what was expected.
    """
    directory = Path(directory)
    where = f"{clean.dataset} {clean.split}"
    if (directory / "labels.npy").is_file():
        images, labels = read_corrupted_split(directory, corruption, severity, severities=sorted(severities))
        if not torch.equal(labels, clean.labels):
            raise DataLayoutError(
                f"{directory}: the labels of {corruption} severity {severity} ({len(labels)} images) are not the "
                f"{where} split's ({len(clean)} images); these are copies of another split. Delete the folder "
                "and rerun (corrupt_split regenerates it)"
            )
        return ImageSplit(
            images, labels, clean.dataset, f"{clean.split}:{corruption}/{severity}", targets=clean.targets
        )
    if not isinstance(clean, FileSplit):
        raise DataLayoutError(
            f"{directory}: expected the corrupted copies of the decoded {where} split in Hendrycks' layout "
            "(<corruption>.npy and labels.npy, written by corrupt_split), found no labels.npy. Delete the folder "
            "and rerun the workflow"
        )
    if not directory.is_dir():
        raise DataLayoutError(
            f"corrupted copies of the {where} split: folder {directory} does not exist; expected {IMAGENET_C_LAYOUT}"
        )
    found = corruption_folders(directory)
    if corruption not in found:
        raise DataLayoutError(
            f"corrupted copies of the {where} split: no folder for {corruption} under {directory}; expected "
            f"{IMAGENET_C_LAYOUT}; found corruptions: {', '.join(found) or 'none'}. Rerun corrupt_split with "
            f"{corruption} among data.corruptions, or point data.corrupted_from at an ImageNet-C that has it"
        )
    folder = found[corruption] / str(severity)
    if not folder.is_dir():
        present = sorted(p.name for p in found[corruption].iterdir() if p.is_dir())
        raise DataLayoutError(
            f"corrupted copies of the {where} split: {folder} does not exist (severity {severity} of "
            f"{corruption}); found severities: {', '.join(present) or 'none'}"
        )
    paths, missing = _copies(folder, clean)
    if missing:
        raise DataLayoutError(
            f"corrupted copies of the {where} split: {len(missing)} of {len(paths)} copies of {corruption} severity "
            f"{severity} are missing, e.g. {paths[missing[0]]} (the copy of {clean.paths[missing[0]]}); "
            "expected one file per split image, of the same class folder and name (or that name with a .JPEG "
            "suffix). Delete the folder and rerun corrupt_split, or use a -C folder (ImageNet-C, imagefolder-c) "
            "made from the same images"
        )
    return FileSplit(
        paths=paths,
        labels=clean.labels,
        dataset=clean.dataset,
        split=f"{clean.split}:{corruption}/{severity}",
        resolution=clean.resolution,
        resize=None,
        root=folder,
        targets=clean.targets,
    )


def _copies(folder: Path, clean: FileSplit) -> tuple[list[Path], list[int]]:
    """Each image's copy under ``folder``: ``<class folder>/<file>`` of the same name, else that name with a
    ``.JPEG`` suffix (:func:`copy_names`, what :func:`write_corrupted_files` writes); and the positions of the
    images without one. One listing per class folder, not one file-system call per image (ImageNet's
    50,000 validation images sit in 1,000 folders)."""
    listed: dict[str, set[str]] = {}
    paths, missing = [], []
    for i, path in enumerate(map(Path, clean.paths)):
        cls = path.parent.name
        if cls not in listed:
            listed[cls] = set(list_images(folder / cls)) if (folder / cls).is_dir() else set()
        name = path.name
        if name not in listed[cls]:
            name = name if path.suffix.lower() in JPEG_SUFFIXES else f"{path.stem}.JPEG"
            if name not in listed[cls]:
                missing.append(i)
        paths.append(folder / cls / name)
    return paths, missing


def split_head(split: Split, n: int | None) -> Split:
    """The first ``n`` images of ``split`` (all when None) in the same form: nothing is decoded."""
    if n is None or n >= len(split):
        return split
    targets = None if split.targets is None else split.targets[:n]
    if isinstance(split, FileSplit):
        return FileSplit(
            paths=split.paths[:n],
            labels=split.labels[:n],
            dataset=split.dataset,
            split=split.split,
            resolution=split.resolution,
            resize=split.resize,
            root=split.root,
            metadata=split.metadata,
            targets=targets,
        )
    return ImageSplit(split.images[:n], split.labels[:n], split.dataset, split.split, split.metadata, targets)


__all__ = [
    "JPEG_QUALITY",
    "copy_names",
    "corrupted_split",
    "split_head",
    "write_corrupted_copies",
    "write_corrupted_files",
]
