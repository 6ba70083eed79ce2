"""Small data sets in every on-disk format robustsoup reads, written by the tests themselves.

Images encode what they are: in a CIFAR fixture, pixel (0, 0) of channel 0
holds the label and channel 1 the index within its part, so a test can see
that the right image arrived with the right label.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from robustsoup.data import imagenet_wnids
from robustsoup.data.imagenet import read_wnids


def coded_images(labels: list[int], res: int = 32, offset: int = 0) -> np.ndarray:
    """uint8 (N, res, res, 3): channel 0 = label·10, channel 1 = (offset + index) % 256, channel 2 = 77."""
    n = len(labels)
    images = np.zeros((n, res, res, 3), dtype=np.uint8)
    images[..., 0] = (np.asarray(labels) * 10)[:, None, None]
    images[..., 1] = ((offset + np.arange(n)) % 256)[:, None, None]
    images[..., 2] = 77
    return images


def write_cifar_binaries(
    root: Path, per_batch: int = 6, num_classes: int = 10, cifar100: bool = False, test_size: int | None = None
) -> Path:
    """torchvision's cifar-10-batches-py (5 train batches + test_batch) or cifar-100-python (train, test)."""
    folder = root / ("cifar-100-python" if cifar100 else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    key = b"fine_labels" if cifar100 else b"labels"
    names = ["train", "test"] if cifar100 else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    offset = 0
    for name in names:
        n = per_batch * (5 if cifar100 and name == "train" else 1)
        if name in ("test", "test_batch") and test_size is not None:
            n = test_size
        labels = [i % num_classes for i in range(n)]
        chw = coded_images(labels, offset=offset).transpose(0, 3, 1, 2).reshape(n, -1)
        offset += n
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), key: labels, b"data": chw}, handle, protocol=2)
    return folder


def write_png(path: Path, array: np.ndarray, fmt: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)


def write_cifar_image_folder(root: Path, classes: list[str], per_class: dict[str, int]) -> None:
    """train/<class>/*, test/<class>/* with lossless images (PNG, BMP) under mixed-case extensions."""
    for split, n in per_class.items():
        for label, name in enumerate(classes):
            for i in range(n):
                ext, fmt = [(".png", "PNG"), (".PNG", "PNG"), (".bmp", "BMP")][i % 3]
                write_png(root / split / name / f"{i:04d}{ext}", coded_images([label], offset=i)[0], fmt)


def write_wnid_folders(root: Path, wnids: list[str], per_class: int, size=(40, 30), ext=".JPEG") -> None:
    """<root>/<wnid>/<i><ext> with small random images (JPEG)."""
    rng = np.random.default_rng(0)
    for wnid in wnids:
        for i in range(per_class):
            array = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            write_png(root / wnid / f"{wnid}_{i}{ext}", array, "JPEG")


def write_hendrycks_npy(
    root: Path, corruptions: list[str], n: int = 8, num_classes: int = 4, res: int = 32
) -> np.ndarray:
    """<corruption>.npy uint8 (5n, res, res, 3) and labels.npy; pixel [0,0,0] = severity·10 + corruption index."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.arange(n) % num_classes
    np.save(root / "labels.npy", np.tile(labels, 5).astype(np.int64))
    for c_index, corruption in enumerate(corruptions):
        data = np.zeros((5 * n, res, res, 3), dtype=np.uint8)
        for s in range(1, 6):
            data[(s - 1) * n : s * n, :, :, 0] = s * 10 + c_index
            data[(s - 1) * n : s * n, :, :, 1] = np.arange(n)[:, None, None]
        np.save(root / f"{corruption}.npy", data)
    return labels


def imagenet_sample(k: int = 3) -> list[str]:
    """``k`` ImageNet wnids: the first, one in the middle and the last."""
    wnids = imagenet_wnids()
    return [wnids[0], wnids[500], wnids[-1]][:k]


def subset_sample(name: str, k: int = 3) -> list[str]:
    wnids = read_wnids(name)
    return [wnids[0], wnids[100], wnids[-1]][:k]


def write_tiny_imagenet(root: Path, wnids: list[str], train_per_class: int = 3, val_per_class: int = 2) -> Path:
    """Tiny-ImageNet's published layout under ``root``: wnids.txt (every one of its 200 classes, in the
    archive's unsorted order), train/<wnid>/images/<wnid>_<i>.JPEG for ``wnids`` only, val/images/val_<i>.JPEG
    and val/val_annotations.txt (64×64 images, channel 0 of pixel (0, 0) = position of the wnid in ``wnids``·10)."""
    every = list(read_wnids("tiny-imagenet"))
    (root / "val" / "images").mkdir(parents=True, exist_ok=True)
    (root / "wnids.txt").write_text("\n".join(every[::-1]) + "\n")
    annotations = []
    for position, wnid in enumerate(wnids):
        image = coded_images([position], res=64)[0]
        for i in range(train_per_class):
            write_png(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG", image, "JPEG")
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(val_per_class):
            name = f"val_{position * val_per_class + i}.JPEG"
            write_png(root / "val" / "images" / name, image, "JPEG")
            annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    (root / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return root


def write_imagenet_c_folders(
    root: Path, wnids: list[str], corruptions: list[str], severities=(1, 2, 3, 4, 5), per_class: int = 2, res=224
) -> None:
    """<root>/<corruption>/<severity>/<wnid>/<wnid>_<i>.JPEG (ImageNet-C's layout; Tiny-ImageNet-C's at res 64)."""
    for corruption in corruptions:
        for severity in severities:
            write_wnid_folders(root / corruption / str(severity), wnids, per_class, size=(res, res))


def write_imagenet_real(root: Path, label_sets: list[list[int]], wnids: list[str]) -> list[Path]:
    """ImageNet-ReaL: real.json holding ``label_sets`` and one validation image per entry,
    val/<wnid>/ILSVRC2012_val_<i+1>.JPEG with image i in folder ``wnids[i % len(wnids)]``."""
    import json

    paths = []
    rng = np.random.default_rng(1)
    for i in range(len(label_sets)):
        path = root / "val" / wnids[i % len(wnids)] / f"ILSVRC2012_val_{i + 1:08d}.JPEG"
        write_png(path, rng.integers(0, 255, (40, 30, 3), dtype=np.uint8), "JPEG")
        paths.append(path)
    (root / "real.json").write_text(json.dumps(label_sets))
    return paths


def write_cue_conflict(root: Path, per_category: int = 2, categories: list[str] | None = None) -> None:
    """<root>/<shape category>/<shape><i>-<texture><j>.png, 224×224 PNGs (the stimuli's layout)."""
    from robustsoup.data.scoring import read_categories

    names = categories or [c for c, _ in read_categories("cue-conflict")]
    rng = np.random.default_rng(2)
    for k, shape in enumerate(names):
        for i in range(per_category):
            texture = names[(k + 1 + i) % len(names)]
            write_png(
                root / shape / f"{shape}{i + 1}-{texture}{i + 1}.png",
                rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            )
