"""Readers of the on-disk formats the papers' data sets come in.

* CIFAR binaries as torchvision unpacks them (``cifar-10-batches-py/``,
  ``cifar-100-python/``): Python pickles of numpy arrays, read with a
  restricted unpickler that builds numpy arrays, lists, dicts and bytes and
  refuses every other global (so a crafted file cannot run code). Pickle is
  the format these files are published in; torchvision reads them the same
  way, without the restriction.
* ImageFolder trees: ``<split>/<class>/<image>`` with any image extension;
  classes by WordNet id (ImageNet, -Sketch, -R, -A, -C), by number (ImageNet-V2,
  ``0`` … ``999``) or by name (CIFAR).
* Tiny-ImageNet's own layout: ``train/<wnid>/images/*``, ``val/images/*``
  with ``val/val_annotations.txt`` naming each validation image's wnid.
* ImageNet-ReaL: the ImageNet validation images in class folders and
  ``real.json``, each image's set of right classes, found by the number in
  its file name (``ILSVRC2012_val_00000293.JPEG`` → entry 292).
* Hendrycks' corruption arrays: ``<corruption>.npy`` uint8 (5·N, R, R, 3),
  severity s in rows (s−1)·N … s·N, and ``labels.npy``; memory-mapped, so
  only the rows asked for are read.

Every reader returns a :class:`~robustsoup.data.sources.Catalog` of parts,
each built when first used. Layout problems raise
:class:`~robustsoup.data.sources.DataLayoutError` naming the missing or
malformed file and showing the expected layout.
"""

from __future__ import annotations

import importlib
import json
import pickle
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path

import lazy_loader
import numpy as np

from .sources import (
    ArraySource,
    Catalog,
    DataLayoutError,
    FileSource,
    Part,
    TensorSource,
    has_image,
    list_images,
    list_subfolders,
    probe_class_folders,
    scan_class_folders,
)

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

SEVERITIES = (1, 2, 3, 4, 5)

# ---------------------------------------------------------------------------
# Restricted unpickling of the CIFAR binaries

_PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts, numbers and bytes; refuses any other class or function."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: a CIFAR batch file holds only numpy arrays and lists"
            )
        if module.startswith("numpy.core"):
            try:  # numpy ≥ 2 moved numpy.core to numpy._core (the old path warns)
                return getattr(importlib.import_module(module.replace("numpy.core", "numpy._core")), name)
            except ImportError:
                pass
        return getattr(importlib.import_module(module), name)


def read_array_pickle(path: Path) -> dict:
    """A CIFAR batch file (dict of numpy arrays / lists, bytes keys) through the restricted unpickler."""
    try:
        with open(path, "rb") as handle:
            obj = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise DataLayoutError(f"{path} is not a CIFAR batch file ({exc})") from exc
    if not isinstance(obj, dict):
        raise DataLayoutError(f"{path}: expected a dict of arrays, found {type(obj).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _cifar_batch(path: Path, label_key: str, resolution: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise DataLayoutError(f"CIFAR batch file {path} is missing")
    batch = read_array_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DataLayoutError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(batch)}")
    data = np.asarray(batch["data"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * resolution * resolution:
        raise DataLayoutError(
            f"{path}: expected uint8 data of shape (N, {3 * resolution * resolution}), found {data.dtype} {data.shape}"
        )
    labels = torch.as_tensor(np.asarray(batch[label_key], dtype=np.int64))
    if len(labels) != len(data):
        raise DataLayoutError(f"{path}: {len(data)} images but {len(labels)} labels")
    images = torch.from_numpy(data.reshape(-1, 3, resolution, resolution).copy())
    return images, labels


# ---------------------------------------------------------------------------
# Helpers for folder trees


def _descend(root: Path, looks_right: Callable[[Path], bool], max_depth: int = 2) -> Path:
    """``root``, or the single sub-folder it wraps (archives often unpack into one folder)."""
    folder = root
    for _ in range(max_depth + 1):
        if looks_right(folder):
            return folder
        subs = list_subfolders(folder) if folder.is_dir() else []
        if len(subs) != 1:
            break
        folder = folder / subs[0]
    return root


def _class_folder_part(
    folder: Path, label_of: Mapping[str, int], what: str, layout: str, resolution: int, resize: int | None
) -> Part:
    def build() -> FileSource:
        paths, labels = scan_class_folders(folder, label_of, what, layout)
        return FileSource(paths, labels, resolution, resize)

    return Part(build, lambda: probe_class_folders(folder, label_of, what, layout))


def _names_label_map(names: Sequence[str]) -> dict[str, int]:
    """Class folder names → labels: numbers as themselves, otherwise the sorted order."""
    if all(n.isdigit() for n in names):
        return {n: int(n) for n in names}
    return {n: i for i, n in enumerate(sorted(names))}


# ---------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100


def cifar_reader(name: str, num_classes: int, layout: str) -> Callable[[Path], Catalog]:
    """Reader of CIFAR-10 (``name`` cifar10) or CIFAR-100 (cifar100): torchvision binaries or an ImageFolder tree."""
    if name == "cifar10":
        folder_name, marker, label_key = "cifar-10-batches-py", "test_batch", "labels"
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        folder_name, marker, label_key = "cifar-100-python", "test", "fine_labels"
        train_files, test_files = ["train"], ["test"]

    def read(root: Path) -> Catalog:
        root = Path(root)
        binaries = next((f for f in (root / folder_name, root) if (f / marker).is_file()), None)
        if binaries is not None:

            def part(files: list[str]) -> Part:
                def build() -> TensorSource:
                    loaded = [_cifar_batch(binaries / f, label_key) for f in files]
                    return TensorSource(torch.cat([x for x, _ in loaded]), torch.cat([y for _, y in loaded]))

                def probe() -> str:
                    missing = [f for f in files if not (binaries / f).is_file()]
                    if missing:
                        raise DataLayoutError(
                            f"{name}: batch file(s) {', '.join(str(binaries / f) for f in missing)} missing.\n"
                            f"Expected layout:\n{layout}"
                        )
                    return f"{len(files)} batch file(s)"

                return Part(build, probe)

            missing = [f for f in train_files + test_files if not (binaries / f).is_file()]
            if missing:
                raise DataLayoutError(f"{name}: {binaries} lacks {', '.join(missing)}.\nExpected layout:\n{layout}")
            return Catalog(
                name,
                root,
                {"train": part(train_files), "test": part(test_files)},
                f"torchvision binaries in {binaries}",
                layout,
            )

        if (root / "train").is_dir() or (root / "test").is_dir():
            for split in ("train", "test"):
                if not (root / split).is_dir():
                    raise DataLayoutError(
                        f"{name}: the ImageFolder tree at {root} has no {split}/ folder "
                        f"(missing split {split!r}).\nExpected layout:\n{layout}"
                    )
            names = sorted(set(list_subfolders(root / "train")) | set(list_subfolders(root / "test")))
            if len(names) != num_classes:
                raise DataLayoutError(
                    f"{name}: expected {num_classes} class folders under {root}/train and {root}/test, "
                    f"found {len(names)} ({names[:5]}{'…' if len(names) > 5 else ''}).\nExpected layout:\n{layout}"
                )
            label_of = _names_label_map(names)
            parts = {
                split: _class_folder_part(root / split, label_of, f"{name} {split}", layout, 32, None)
                for split in ("train", "test")
            }
            return Catalog(name, root, parts, f"ImageFolder tree in {root}", layout)

        raise DataLayoutError(
            f"{name}: no data found at {root}: neither {root / folder_name}/ (torchvision binaries) "
            f"nor {root}/train/ and {root}/test/ (ImageFolder).\nExpected layout:\n{layout}"
        )

    return read


# ---------------------------------------------------------------------------
# ImageNet and its natural shifts


def imagenet_folder_reader(
    name: str,
    parts: Mapping[str, str],
    label_of: Callable[[], Mapping[str, int]],
    resolution: int,
    resize: int | None,
    layout: str,
) -> Callable[[Path], Catalog]:
    """Reader of class-folder trees: ``parts`` maps a part name to its folder under the root ('' = the root)."""

    def read(root: Path) -> Catalog:
        labels = label_of()
        root = Path(root)

        def looks_right(folder: Path) -> bool:
            if all(parts.values()):  # split folders (train/, val/) under the root
                return any((folder / sub).is_dir() for sub in parts.values())
            return folder.is_dir() and any(s in labels for s in list_subfolders(folder))

        root = _descend(root, looks_right)
        catalog_parts = {}
        for part, sub in parts.items():
            folder = root / sub if sub else root
            if not folder.is_dir():
                raise DataLayoutError(
                    f"{name}: folder {folder} is missing (split {part!r}).\nExpected layout:\n{layout}"
                )
            catalog_parts[part] = _class_folder_part(folder, labels, f"{name} {part}", layout, resolution, resize)
        return Catalog(name, root, catalog_parts, f"class folders in {root}", layout)

    return read


def tiny_imagenet_reader(
    name: str, label_of: Callable[[], Mapping[str, int]], resolution: int, layout: str
) -> Callable[[Path], Catalog]:
    """Reader of Tiny-ImageNet as published (``tiny-imagenet-200.zip`` unpacked): parts ``train`` and ``val``.

    ``wnids.txt`` must list exactly the 200 classes of ``label_of`` (labels
    are their sorted order, as torchvision's ImageFolder gives); the
    training images are in ``train/<wnid>/images/``, the validation images
    in ``val/images/`` with their wnid in ``val/val_annotations.txt``
    (tab-separated: file, wnid, bounding box), or sorted into
    ``val/<wnid>/`` folders (what the RWS code reads with ImageFolder).
    """

    def read(root: Path) -> Catalog:
        labels = label_of()
        root = _descend(Path(root), lambda f: (f / "wnids.txt").is_file())
        wnids_file = root / "wnids.txt"
        if not wnids_file.is_file():
            raise DataLayoutError(f"{name}: {wnids_file} is missing.\nExpected layout:\n{layout}")
        listed = [w.strip() for w in wnids_file.read_text(encoding="utf-8").split() if w.strip()]
        if sorted(listed) != sorted(labels):
            unknown = sorted(set(listed) - set(labels))
            absent = sorted(set(labels) - set(listed))
            raise DataLayoutError(
                f"{name}: {wnids_file} lists {len(listed)} wnids; expected Tiny-ImageNet's {len(labels)} "
                f"(not Tiny-ImageNet's: {unknown[:3]}; missing: {absent[:3]}).\nExpected layout:\n{layout}"
            )
        train, val = root / "train", root / "val"
        val_folders = val.is_dir() and not (val / "val_annotations.txt").exists()
        needed = ("train", "val") if val_folders else ("train", "val/images", "val/val_annotations.txt")
        for sub in needed:
            if not (root / sub).exists():
                raise DataLayoutError(f"{name}: {root / sub} is missing.\nExpected layout:\n{layout}")

        def train_files() -> tuple[list[Path], torch.Tensor]:
            classes = list_subfolders(train)
            unknown = [c for c in classes if c not in labels]
            if unknown or not classes:
                raise DataLayoutError(
                    f"{name} train: {train} holds {len(classes)} class folders, {len(unknown)} of them not "
                    f"Tiny-ImageNet classes (e.g. {unknown[:3]}).\nExpected layout:\n{layout}"
                )
            paths, targets, empty = [], [], []
            for wnid in classes:
                folder = train / wnid / "images"
                files = list_images(folder) if folder.is_dir() else []
                if not files:
                    empty.append(str(folder))
                paths += [folder / f for f in files]
                targets += [labels[wnid]] * len(files)
            if empty:
                raise DataLayoutError(
                    f"{name} train: no images in {', '.join(empty[:3])}{'…' if len(empty) > 3 else ''}.\n"
                    f"Expected layout:\n{layout}"
                )
            return paths, torch.as_tensor(targets, dtype=torch.int64)

        def probe_train() -> str:
            classes = list_subfolders(train)
            if not classes or any(c not in labels for c in classes):
                train_files()  # raises with the full message
            for wnid in sorted({classes[0], classes[len(classes) // 2], classes[-1]}):
                folder = train / wnid / "images"
                if not folder.is_dir() or not has_image(folder):
                    raise DataLayoutError(f"{name} train: no images in {folder}.\nExpected layout:\n{layout}")
            return f"{len(classes)} class folders"

        def val_files() -> tuple[list[Path], torch.Tensor]:
            annotations = val / "val_annotations.txt"
            paths, targets = [], []
            for number, line in enumerate(annotations.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                fields = line.split("\t")
                if len(fields) < 2 or fields[1] not in labels:
                    raise DataLayoutError(
                        f"{name} val: {annotations} line {number} is {line[:60]!r}; expected "
                        "'<file>\\t<wnid>\\t<x>\\t<y>\\t<w>\\t<h>' with a Tiny-ImageNet wnid"
                    )
                paths.append(val / "images" / fields[0])
                targets.append(labels[fields[1]])
            missing = [p for p in paths if not p.is_file()]
            if missing or not paths:
                raise DataLayoutError(
                    f"{name} val: {len(missing)} of the {len(paths)} images {annotations} names are not in "
                    f"{val / 'images'} (e.g. {[p.name for p in missing[:3]]}).\nExpected layout:\n{layout}"
                )
            return paths, torch.as_tensor(targets, dtype=torch.int64)

        def probe_val() -> str:
            paths, _ = val_files()
            return f"{len(paths)} annotated images"

        def part(files: Callable[[], tuple[list[Path], torch.Tensor]], probe: Callable[[], str]) -> Part:
            return Part(lambda: FileSource(*files(), resolution), probe)

        if val_folders:
            val_part = _class_folder_part(val, labels, f"{name} val", layout, resolution, None)
        else:
            val_part = part(val_files, probe_val)
        parts = {"train": part(train_files, probe_train), "val": val_part}
        return Catalog(name, root, parts, f"Tiny-ImageNet's layout in {root}", layout)

    return read


_VAL_NUMBER = re.compile(r"ILSVRC2012_val_(\d{8})\.")


def read_label_sets(path: Path, num_classes: int) -> list[list[int]]:
    """``real.json``: one list of right class indices per validation image, in file-number order."""
    try:
        sets = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataLayoutError(f"{path} is not readable JSON ({exc}); download real.json again") from exc
    if not isinstance(sets, list) or not all(isinstance(s, list) for s in sets):
        raise DataLayoutError(f"{path}: expected a list with one list of class indices per validation image")
    bad = next((i for i, s in enumerate(sets) if not all(isinstance(c, int) and 0 <= c < num_classes for c in s)), None)
    if bad is not None:
        raise DataLayoutError(
            f"{path}: entry {bad} (image ILSVRC2012_val_{bad + 1:08d}) is {sets[bad]!r}; expected class indices "
            f"0…{num_classes - 1}"
        )
    return sets


def label_set_reader(
    name: str,
    label_of: Callable[[], Mapping[str, int]],
    resolution: int,
    resize: int | None,
    layout: str,
    labels_file: str = "real.json",
    images: str = "val",
) -> Callable[[Path], Catalog]:
    """Reader of ImageNet-ReaL: ``<root>/<labels_file>`` and the validation images in ``<root>/<images>/<wnid>/``.

    One part, ``all``: every image whose label set is non-empty, its label
    the class folder (the splits stratify by it) and its ``targets`` the
    set. Images with an empty set are left out, as the ReaL paper does.
    """

    def read(root: Path) -> Catalog:
        root = _descend(Path(root), lambda f: (f / labels_file).is_file())
        labels_path, folder = root / labels_file, root / images
        for needed in (labels_path, folder):
            if not needed.exists():
                raise DataLayoutError(f"{name}: {needed} is missing.\nExpected layout:\n{layout}")

        @cache
        def label_sets() -> list[list[int]]:
            return read_label_sets(labels_path, len(label_of()))

        def entry(path: Path) -> int:
            match = _VAL_NUMBER.match(path.name)
            if match is None or not 1 <= int(match.group(1)) <= len(label_sets()):
                raise DataLayoutError(
                    f"{name}: image {path} is not one of the {len(label_sets()):,} validation images "
                    f"{labels_path.name} labels (expected ILSVRC2012_val_<number 1…{len(label_sets())}>.JPEG)"
                )
            return int(match.group(1)) - 1

        def build() -> FileSource:
            paths, labels = scan_class_folders(folder, label_of(), name, layout)
            sets = [label_sets()[entry(p)] for p in paths]
            keep = [i for i, s in enumerate(sets) if s]
            width = max((len(sets[i]) for i in keep), default=1)
            targets = torch.full((len(keep), width), -1, dtype=torch.int64)
            for row, i in enumerate(keep):
                targets[row, : len(sets[i])] = torch.as_tensor(sets[i], dtype=torch.int64)
            return FileSource([paths[i] for i in keep], labels[keep], resolution, resize, targets=targets)

        def probe() -> str:
            found = probe_class_folders(folder, label_of(), name, layout)
            first = folder / list_subfolders(folder)[0]
            entry(first / list_images(first)[0])
            empty = sum(not s for s in label_sets())
            return f"{found}; {labels_path.name}: {len(label_sets()):,} label sets, {empty:,} empty (left out)"

        return Catalog(
            name, root, {"all": Part(build, probe)}, f"{labels_path.name} and class folders in {folder}", layout
        )

    return read


def _find_corruption_folders(root: Path) -> dict[str, Path]:
    """Corruption name → folder holding its severity folders ``1`` … ``5``.

    Accepts ``<root>/<corruption>/<s>/`` and Hendrycks' archives unpacked by
    category (``<root>/noise/gaussian_noise/<s>/``).
    """
    found: dict[str, Path] = {}

    def is_corruption(folder: Path) -> bool:
        return any((folder / str(s)).is_dir() for s in SEVERITIES)

    for sub in list_subfolders(root):
        if is_corruption(root / sub):
            found[sub] = root / sub
        else:
            for inner in list_subfolders(root / sub):
                if is_corruption(root / sub / inner):
                    found[inner] = root / sub / inner
    return dict(sorted(found.items()))


def imagenet_c_reader(
    name: str, label_of: Callable[[], Mapping[str, int]], resolution: int, layout: str
) -> Callable[[Path], Catalog]:
    """Reader of ``<root>/<corruption>/<severity>/<wnid>/*`` (ImageNet-C); parts are ``<corruption>/<severity>``."""

    def read(root: Path) -> Catalog:
        labels = label_of()
        root = _descend(Path(root), lambda f: bool(_find_corruption_folders(f)))
        if (root / "val").is_dir() and _find_corruption_folders(root / "val"):
            root = root / "val"  # the RWS code's Tiny-ImageNet-C: train/ (experts' images) and val/ (the test set)
        corruptions = _find_corruption_folders(root)
        if not corruptions:
            raise DataLayoutError(
                f"{name}: no corruption folders (<corruption>/<severity 1-5>/) under {root}.\n"
                f"Expected layout:\n{layout}"
            )
        parts = {}
        for corruption, folder in corruptions.items():
            for severity in SEVERITIES:
                parts[f"{corruption}/{severity}"] = _class_folder_part(
                    folder / str(severity),
                    labels,
                    f"{name} {corruption} severity {severity}",
                    layout,
                    resolution,
                    None,
                )
        return Catalog(name, root, parts, f"{len(corruptions)} corruption folders in {root}", layout)

    return read


# ---------------------------------------------------------------------------
# Hendrycks' .npy corruption arrays (CIFAR-10-C, CIFAR-100-C, generated sets)


def hendrycks_npy_reader(name: str, resolution: int, num_classes: int, layout: str) -> Callable[[Path], Catalog]:
    """Reader of ``<corruption>.npy`` + ``labels.npy``; parts are ``<corruption>/<severity>``."""

    def read(root: Path) -> Catalog:
        root = _descend(Path(root), lambda f: (f / "labels.npy").is_file())
        labels_path = root / "labels.npy"
        if not labels_path.is_file():
            raise DataLayoutError(f"{name}: {labels_path} is missing.\nExpected layout:\n{layout}")
        files = sorted(p for p in root.glob("*.npy") if p.name != "labels.npy")
        if not files:
            raise DataLayoutError(f"{name}: no <corruption>.npy files in {root}.\nExpected layout:\n{layout}")

        @cache
        def all_labels() -> np.ndarray:
            labels = np.load(labels_path, mmap_mode="r", allow_pickle=False)
            if labels.ndim != 1 or labels.shape[0] % len(SEVERITIES) or not np.issubdtype(labels.dtype, np.integer):
                raise DataLayoutError(
                    f"{name}: {labels_path} must be integer labels of shape (5·N,) (the test labels "
                    f"repeated once per severity), found {labels.dtype} {labels.shape}"
                )
            values = np.array(labels, dtype=np.int64)  # a small in-memory copy
            if values.min() < 0 or values.max() >= num_classes:
                raise DataLayoutError(
                    f"{name}: {labels_path} holds labels {values.min()}…{values.max()}, expected 0…{num_classes - 1}"
                )
            return values

        @cache
        def array(path: Path) -> np.ndarray:
            try:
                data = np.load(path, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                raise DataLayoutError(f"{name}: {path} is not a plain .npy array ({exc})") from exc
            labels = all_labels()
            expected = (labels.shape[0], resolution, resolution, 3)
            if data.dtype != np.uint8 or tuple(data.shape) != expected:
                raise DataLayoutError(
                    f"{name}: {path} has the wrong shape: expected uint8 {expected} "
                    f"(5 severities × {labels.shape[0] // len(SEVERITIES)} images, {resolution}×{resolution}, "
                    f"channels last), found {data.dtype} {tuple(data.shape)}.\nExpected layout:\n{layout}"
                )
            return data

        def part(path: Path, severity: int) -> Part:
            def rows() -> tuple[int, int]:
                n = all_labels().shape[0] // len(SEVERITIES)
                return (severity - 1) * n, severity * n

            def build() -> ArraySource:
                start, stop = rows()
                labels = torch.from_numpy(all_labels()[start:stop].copy())
                return ArraySource(array(path), labels, start, stop)

            def probe() -> str:
                start, stop = rows()
                array(path)
                return f"{stop - start} images (rows {start}…{stop - 1})"

            return Part(build, probe)

        parts = {f"{p.stem}/{s}": part(p, s) for p in files for s in SEVERITIES}
        return Catalog(name, root, parts, f"{len(files)} corruption arrays in {root}", layout)

    return read
