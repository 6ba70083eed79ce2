"""Your own data: any ImageFolder tree as a data set (config ``dataset: imagefolder``).

The tree under ``data.root`` is either split already,

    ROOT/train/<class>/<image>   and   ROOT/test/<class>/<image>

(train = the training images; adapt = the first ``data.k_adapt_per_class`` images per class of
test/ under the split seed, test = the rest: the ``official`` scheme of CIFAR), or one folder,

    ROOT/<class>/<image>

split three ways stratified by class (``data.n_adapt``, ``data.n_test``; the rest trains: the
``stratified`` scheme of the digits). Any number of classes (at least two), any image size: each
image is resized (shorter side) to ``data.resolution`` and centre-cropped. Class names are the
folder names; labels are their sorted order, recorded in every split's cache header and in every
checkpoint's sidecar.

The spec is built from the config (:func:`imagefolder_spec`) and registered under the run's data
set name (``data.name``, default ``imagefolder``) by :func:`register_imagefolder`, which the
workflow, every job and the command line call when they resolve a config. Listing the tree is
torch-free. The normalization is ``data.mean`` / ``data.std`` when given, else the per-channel
statistics of the training split, computed by ``prepare_data`` (:func:`split_header_fields`) and
read back from the train split's cache header (:func:`read_split_header`).

Corrupted copies of the tree's images made elsewhere (your own corruptions, or the standard ones
made by another tool) are the shift set ``imagefolder-c`` (:func:`register_imagefolder_c`):

    CROOT/<corruption>/<severity>/<class>/<image>

with the tree's class folders. ``data.shifts: {imagefolder-c: CROOT}`` checks it while the workflow
parses and splits each corruption and severity like any -C set (the soups per shift evaluate it);
``data.corrupted_from: imagefolder-c`` reads the corrupted copies of the adapt and test splits from
it, by class folder and file name, instead of generating them (the adapt and test splits are then
kept as file lists, whatever their size, so that each image's name is known).
"""

from __future__ import annotations

import dataclasses
import json
import struct
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import lazy_loader

from .readers import _class_folder_part, corruption_folders, imagenet_c_reader
from .registry import (
    DATASETS,
    IMAGEFOLDER,
    DatasetSpec,
    TrainAugmentation,
    dataset_name,
    default_augmentation,
    register_dataset,
)
from .sources import Catalog, DataLayoutError, list_images, list_subfolders

IMAGEFOLDER_C = "imagefolder-c"  # the corrupted copies of an ImageFolder's images, read from a folder

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

IMAGEFOLDER_LAYOUT = (
    "  ROOT/train/<class>/<image>   e.g. ROOT/train/daisy/0001.jpg (any size; any image extension)\n"
    "  ROOT/test/<class>/<image>    the same class folders\n"
    "or one folder, split stratified by class (data.n_adapt, data.n_test):\n"
    "  ROOT/<class>/<image>\n"
    "at least two class folders; labels are the folder names in sorted order"
)


@cache
def scan_tree(root: str) -> tuple[str, tuple[str, ...], dict[str, int]]:
    """``(scheme, class names, images per part)`` of the ImageFolder tree at ``root``; torch-free.

    ``official`` with parts train and test when ROOT/train/ and ROOT/test/ exist, else
    ``stratified`` with one part ``all``. Raises :class:`DataLayoutError` naming what is wrong.
    """
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise DataLayoutError(
            f"imagefolder: data.root {folder} does not exist or is not a folder.\nExpected layout:\n{IMAGEFOLDER_LAYOUT}"
        )
    if (folder / "train").is_dir() or (folder / "test").is_dir():
        for part in ("train", "test"):
            if not (folder / part).is_dir():
                raise DataLayoutError(
                    f"imagefolder: {folder} has {'test' if part == 'train' else 'train'}/ but no {part}/ folder; "
                    f"give both, or one folder of class folders.\nExpected layout:\n{IMAGEFOLDER_LAYOUT}"
                )
        parts = {"train": folder / "train", "test": folder / "test"}
        scheme = "official"
    else:
        parts, scheme = {"all": folder}, "stratified"
    names: set[str] = set()
    sizes: dict[str, int] = {}
    for part, where in parts.items():
        classes = list_subfolders(where)
        empty = [c for c in classes if not list_images(where / c)]
        if empty:
            raise DataLayoutError(
                f"imagefolder: class folder(s) without images under {where}: {empty[:5]}"
                f"{'…' if len(empty) > 5 else ''}.\nExpected layout:\n{IMAGEFOLDER_LAYOUT}"
            )
        names.update(classes)
        sizes[part] = sum(len(list_images(where / c)) for c in classes)
    if len(names) < 2:
        raise DataLayoutError(
            f"imagefolder: {folder} holds {len(names)} class folder(s) ({sorted(names)}); a classifier needs at "
            f"least two.\nExpected layout:\n{IMAGEFOLDER_LAYOUT}"
        )
    if scheme == "official":
        lacking = {p: sorted(names - set(list_subfolders(w))) for p, w in parts.items()}
        lacking = {p: c for p, c in lacking.items() if c}
        if lacking:
            raise DataLayoutError(
                "imagefolder: train/ and test/ must hold the same class folders; missing: "
                + "; ".join(f"{p}/ lacks {c[:5]}" for p, c in lacking.items())
                + f".\nExpected layout:\n{IMAGEFOLDER_LAYOUT}"
            )
    return scheme, tuple(sorted(names)), sizes


def imagefolder_reader(name: str, resolution: int, class_names: tuple[str, ...]):
    """Reader of the tree: its parts as class-folder sources, labels the sorted class order."""
    label_of = {c: i for i, c in enumerate(class_names)}

    def read(root: Path) -> Catalog:
        root = Path(root)
        scheme, _, _ = scan_tree(str(root))
        subs = {"train": "train", "test": "test"} if scheme == "official" else {"all": ""}
        parts = {
            part: _class_folder_part(
                root / sub if sub else root, label_of, f"{name} {part}", IMAGEFOLDER_LAYOUT, resolution, None
            )
            for part, sub in subs.items()
        }
        return Catalog(
            name, root, parts, f"ImageFolder tree in {root} ({len(class_names)} classes)", IMAGEFOLDER_LAYOUT
        )

    return read


def imagefolder_spec(
    name: str,
    root: str,
    resolution: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    flip: bool = True,
) -> DatasetSpec:
    """The spec of the ImageFolder tree at ``root`` under the name ``name`` (see the module's text)."""
    scheme, class_names, sizes = scan_tree(str(Path(root).expanduser()))
    crop = default_augmentation(resolution)
    augmentation = TrainAugmentation(
        crop=crop.crop,
        padding=crop.padding,
        flip=flip,
        why="" if flip else "data.augmentation.flip: false (a mirrored image is no image of this set)",
    )
    return DatasetSpec(
        name=name,
        num_classes=len(class_names),
        resolution=resolution,
        mean=tuple(mean) if mean else None,
        std=tuple(std) if std else None,
        description=(
            f"ImageFolder tree {root}: {len(class_names)} classes, "
            + ", ".join(f"{n:,} {p}" for p, n in sizes.items())
            + f" images at {resolution} px"
        ),
        reader=imagefolder_reader(name, resolution, class_names),
        split_scheme=scheme,
        nominal_sizes=sizes,
        lazy=True,
        layout=IMAGEFOLDER_LAYOUT,
        augmentation=augmentation,
        class_names=class_names,
        threats={},
    )


def register_imagefolder(config: Mapping[str, Any]) -> DatasetSpec | None:
    """Register the config's ImageFolder data set under its name (None for a registered data set).

    Registering the same name again replaces the earlier spec (a process may resolve several
    configs); a name of a built-in data set is refused.
    """
    if config["dataset"] != IMAGEFOLDER:
        return None
    data = config["data"]
    name = dataset_name(config)
    previous = DATASETS.get(name)
    if name == IMAGEFOLDER_C or (previous is not None and previous.layout != IMAGEFOLDER_LAYOUT):
        raise DataLayoutError(
            f"config key 'data.name': {name!r} is a built-in data set; name your ImageFolder otherwise"
        )
    if not data.get("root"):
        raise DataLayoutError(
            f"dataset imagefolder is read from disk but data.root is not set.\nExpected layout:\n{IMAGEFOLDER_LAYOUT}"
        )
    spec = imagefolder_spec(
        name,
        str(data["root"]),
        int(data["resolution"]),
        data.get("mean"),
        data.get("std"),
        flip=(data.get("augmentation") or {}).get("flip", True) is not False,
    )
    DATASETS.pop(name, None)
    register_dataset(spec)
    register_imagefolder_c(spec, file_lists=data.get("corrupted_from") == IMAGEFOLDER_C)
    return DATASETS[name]


# ---------------------------------------------------------------------------
# What a checkpoint's sidecar records of its ImageFolder, and the spec read back from it


SIDECAR_KEYS = ("class_names", "resolution")


def sidecar_provenance(spec: DatasetSpec) -> dict[str, Any]:
    """What every checkpoint trained on the ImageFolder ``spec`` records of it (``provenance``): the class
    names in label order and the resolution its images are brought to; empty for a built-in data set."""
    if spec.class_names is None:
        return {}
    return dict(zip(SIDECAR_KEYS, (list(spec.class_names), spec.resolution)))


def spec_from_sidecar(
    name: str, num_classes: int, mean: Any, std: Any, provenance: Mapping[str, Any]
) -> DatasetSpec | None:
    """The ImageFolder a checkpoint was trained on, as far as its sidecar (:func:`sidecar_provenance`) tells,
    for a process that has not resolved the run's config (``robustsoup soup-for``): its images' size, classes
    and statistics, without a reader. None where the sidecar does not record them."""
    if "resolution" not in provenance or "class_names" not in provenance:
        return None
    return DatasetSpec(
        name=name,
        num_classes=num_classes,
        resolution=int(provenance["resolution"]),
        mean=tuple(mean),
        std=tuple(std),
        description=f"ImageFolder {name} ({num_classes} classes), as its checkpoints' sidecar records it",
        reader=None,
        layout=IMAGEFOLDER_LAYOUT,
        class_names=tuple(provenance["class_names"]),
        threats={},
    )


def portable_specs() -> tuple[DatasetSpec, ...]:
    """The ImageFolder specs this process registered (the run's data set, its ``imagefolder-c``) without
    their readers: what a spawned rank or a SLURM task registers again (:func:`register_portable`), as it
    never resolved the config; its images come with the call."""
    return tuple(dataclasses.replace(s, reader=None) for s in DATASETS.values() if s.class_names is not None)


def register_portable(specs: tuple[DatasetSpec, ...]) -> None:
    """Register the specs of :func:`portable_specs` where this process lacks them."""
    for spec in specs:
        DATASETS.setdefault(spec.name, spec)


# ---------------------------------------------------------------------------
# Corrupted copies read from a folder: the shift set imagefolder-c

IMAGEFOLDER_C_LAYOUT = (
    "  CROOT/<corruption>/<severity 1-5>/<class>/<image>   e.g. CROOT/fog/3/daisy/0001.png\n"
    "  the class folders of the ImageFolder tree; for data.corrupted_from: imagefolder-c, one copy of every\n"
    "  adapt and test image, of the same class folder and file name (or that name with a .JPEG suffix)"
)


def register_imagefolder_c(clean: DatasetSpec, *, file_lists: bool = False) -> DatasetSpec:
    """Register ``imagefolder-c``: the corrupted copies of the ImageFolder ``clean`` (its class names, its
    resolution and statistics), a shift of it. ``file_lists``: ``data.corrupted_from: imagefolder-c``, so the
    clean spec keeps its adapt and test splits as file lists (re-registered so)."""
    if file_lists and clean.file_lists != ("adapt", "test"):
        clean = dataclasses.replace(clean, file_lists=("adapt", "test"))
        DATASETS[clean.name] = clean
    DATASETS.pop(IMAGEFOLDER_C, None)
    assert clean.class_names is not None
    test_images = clean.nominal_size(clean.test_part if clean.split_scheme == "official" else "all")
    return register_dataset(_imagefolder_c_spec(clean.class_names, clean.resolution, clean.name, test_images))


def register_imagefolder_c_at(root: str | Path | None, resolution: int) -> DatasetSpec:
    """``imagefolder-c`` of the folder at ``root`` alone (``robustsoup data check --dataset imagefolder-c``):
    its classes are the class folders it holds, in sorted order."""
    folders = corruption_folders(root) if root else {}
    names = sorted(
        {c for folder in folders.values() for s in list_subfolders(folder) for c in list_subfolders(folder / s)}
    )
    DATASETS.pop(IMAGEFOLDER_C, None)
    return register_dataset(_imagefolder_c_spec(tuple(names), resolution, IMAGEFOLDER, 0))


def _imagefolder_c_spec(class_names: tuple[str, ...], resolution: int, base: str, images: int) -> DatasetSpec:
    label_of = {c: i for i, c in enumerate(class_names)}
    return DatasetSpec(
        name=IMAGEFOLDER_C,
        num_classes=len(class_names),
        resolution=resolution,
        mean=None,
        std=None,
        description=f"corrupted copies of the ImageFolder {base} ({len(class_names)} classes) at {resolution} px",
        reader=imagenet_c_reader(IMAGEFOLDER_C, lambda: label_of, resolution, IMAGEFOLDER_C_LAYOUT),
        split_scheme="shift",
        nominal_sizes={"*": images},
        lazy=True,
        base=base,
        layout=IMAGEFOLDER_C_LAYOUT,
        class_names=class_names,
        threats={},
    )


# ---------------------------------------------------------------------------
# The training images' statistics and the class names, in the split caches


def split_header_fields(spec: DatasetSpec, split: str, source, indices) -> dict[str, str]:
    """What an ImageFolder's split cache records beyond the usual header: the class names (every
    split) and, for the train split without configured ``data.mean``/``data.std``, its statistics."""
    if spec.class_names is None:
        return {}
    fields = {"class_names": json.dumps(list(spec.class_names))}
    if split == "train" and spec.mean is None:
        sums = torch.zeros(3, dtype=torch.float64)
        squares = torch.zeros(3, dtype=torch.float64)
        count = 0
        for _, batch in source.iter_batches(indices, 512):
            x = batch.to(torch.float64).div_(255.0)
            sums += x.sum(dim=(0, 2, 3))
            squares += x.pow(2).sum(dim=(0, 2, 3))
            count += x.shape[0] * x.shape[2] * x.shape[3]
        mean = sums / count
        std = (squares / count - mean.pow(2)).clamp_min(0).sqrt()
        fields["mean"] = json.dumps([round(float(m), 6) for m in mean])
        fields["std"] = json.dumps([round(float(s), 6) for s in std])
    return fields


def read_split_header(path: str | Path) -> dict[str, str]:
    """A split cache's header (its metadata) without torch: a ``.safetensors`` file's ``__metadata__``
    or a ``.tsv`` file list's ``# key=value`` lines. Missing file: empty."""
    path = Path(path)
    if not path.is_file():
        return {}
    if path.suffix == ".tsv":
        meta = {}
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                if not line.startswith("# "):
                    break
                key, _, value = line[2:].rstrip("\n").partition("=")
                meta[key] = value
        return meta
    with open(path, "rb") as handle:
        (length,) = struct.unpack("<Q", handle.read(8))
        header = json.loads(handle.read(length))
    return dict(header.get("__metadata__") or {})


def statistics_from_cache(spec: DatasetSpec, train_path: str | Path) -> DatasetSpec:
    """``spec`` with the mean and std the train split's cache header holds, when the spec has none."""
    if spec.mean is not None:
        return spec
    header = read_split_header(train_path)
    if "mean" not in header:
        return spec
    filled = dataclasses.replace(spec, mean=tuple(json.loads(header["mean"])), std=tuple(json.loads(header["std"])))
    DATASETS[spec.name] = filled
    return filled
