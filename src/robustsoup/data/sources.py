"""Where images come from: in-memory tensors, array files, or image files decoded on demand.

Every reader hands out :class:`ImageSource` objects, one per *part* of a data
set (an official split such as ``train`` / ``test`` / ``val``, a corruption
and severity such as ``fog/3``, or ``all`` for a set without splits). A
source knows its labels and decodes any images by index into uint8
``(B, 3, R, R)`` tensors, so nothing has to fit in memory until a split is
cached.

A :class:`Catalog` maps part names to sources and builds each one only when
it is asked for (listing ImageNet's 1.28 M training files takes a while).
"""

from __future__ import annotations

import itertools
import os
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import lazy_loader
import numpy as np

from . import options
from .options import DECODERS, DEFAULT_DECODER

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

# torchvision 0.29 deprecates its image decoders in favour of TorchCodec, warning on every call; they are
# still there, and `data.decoder: pil` is the way off them (see decode_image).
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision")

# Any of these (case-insensitive) counts as an image in a folder tree.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp", ".gif")


class DataLayoutError(ValueError):
    """Data on disk that is missing, misplaced or of the wrong shape.

    The message names the file or folder, what was expected there and what
    was found, and (for layout problems) shows the expected layout.
    """


def as_index(indices, n: int) -> torch.Tensor:
    """Normalize ``indices`` (tensor, list, range, slice, int) to an int64 tensor within ``[0, n)``."""
    if isinstance(indices, slice):
        return torch.arange(n)[indices]
    if isinstance(indices, range):
        return torch.arange(indices.start, indices.stop, indices.step, dtype=torch.int64)
    index = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
    if len(index) and (int(index.min()) < -n or int(index.max()) >= n):
        raise IndexError(f"image index out of range: {n} images, asked for {index.min()}…{index.max()}")
    return index % n if n else index


class ImageSource:
    """Labelled images of one part of a data set, decodable by index.

    Subclasses set ``labels`` (int64, N) and ``resolution`` and implement
    :meth:`load`. ``paths`` is the list of image files for file-backed
    sources and None otherwise. ``targets`` (int64, (N, L), padded with -1)
    is each image's set of right classes where one label is not enough
    (ImageNet-ReaL, see :mod:`robustsoup.data.scoring`), else None.
    """

    labels: torch.Tensor
    resolution: int
    paths: list[Path] | None = None
    targets: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def load(self, indices) -> torch.Tensor:
        """uint8 ``(B, 3, R, R)`` images at ``indices``."""
        raise NotImplementedError

    def iter_batches(self, indices: torch.Tensor, batch_size: int = 1024) -> Iterator[tuple[int, torch.Tensor]]:
        """``(offset, images)`` for consecutive batches of ``indices``."""
        for start in range(0, len(indices), batch_size):
            yield start, self.load(indices[start : start + batch_size])


class TensorSource(ImageSource):
    """Images already in memory as uint8 ``(N, 3, R, R)``."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 (N, 3, H, W) images, found {images.dtype} {tuple(images.shape)}")
        if images.shape[0] != labels.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {labels.shape[0]} labels")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.resolution = int(images.shape[-1])

    def load(self, indices) -> torch.Tensor:
        return self.images[as_index(indices, len(self))]


class ArraySource(ImageSource):
    """Rows ``[start, stop)`` of a uint8 ``(M, R, R, 3)`` array, e.g. a memory-mapped ``.npy`` file.

    Only the rows asked for are read from disk.
    """

    def __init__(self, array: np.ndarray, labels: torch.Tensor, start: int = 0, stop: int | None = None) -> None:
        stop = array.shape[0] if stop is None else stop
        if labels.shape[0] != stop - start:
            raise ValueError(f"rows {start}:{stop} of the array but {labels.shape[0]} labels")
        self.array, self.start, self.stop = array, start, stop
        self.labels = labels.to(torch.int64)
        self.resolution = int(array.shape[1])

    def load(self, indices) -> torch.Tensor:
        rows = as_index(indices, len(self)).numpy() + self.start
        order = np.argsort(rows, kind="stable")  # sorted reads are kinder to a memory map
        block = np.empty((len(rows),) + self.array.shape[1:], dtype=np.uint8)
        block[order] = self.array[rows[order]]
        return torch.from_numpy(block).permute(0, 3, 1, 2).contiguous()


def _resized_shape(width: int, height: int, resolution: int, resize: int | None) -> tuple[int, int]:
    """(width, height) after the shorter side goes to ``resize`` (or ``resolution``), never below ``resolution``."""
    short = resize or resolution
    if width <= height:
        new_w, new_h = short, int(short * height / width)
    else:
        new_w, new_h = int(short * width / height), short
    return max(new_w, resolution), max(new_h, resolution)


def _centre_box(width: int, height: int, resolution: int) -> tuple[int, int]:
    """(left, top) of the centre ``resolution`` × ``resolution`` window (torchvision's CenterCrop rounding)."""
    return int(round((width - resolution) / 2.0)), int(round((height - resolution) / 2.0))


def _decode_pil(path: str | os.PathLike, resolution: int, resize: int | None) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as handle:
            image = handle.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise DataLayoutError(f"cannot decode image {path}: {exc}; replace or remove the file") from exc
    width, height = image.size
    if (width, height) != (resolution, resolution):
        new_w, new_h = _resized_shape(width, height, resolution, resize)
        image = image.resize((new_w, new_h), Image.BILINEAR)
        left, top = _centre_box(new_w, new_h, resolution)
        image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


def _decode_torchvision(path: str | os.PathLike, resolution: int, resize: int | None) -> torch.Tensor:
    try:
        from torchvision.io import ImageReadMode, read_file
        from torchvision.io import decode_image as tv_decode
        from torchvision.transforms.v2.functional import resize as tv_resize
    except ImportError as exc:
        raise RuntimeError(
            f"data.decoder: torchvision needs torchvision.io's image decoders, which this torchvision lacks "
            f"({exc}); set data.decoder: pil"
        ) from exc

    try:
        image = tv_decode(read_file(str(path)), mode=ImageReadMode.RGB)
    except RuntimeError:  # a format torchvision.io does not read (BMP, TIFF, PPM) or a damaged file: PIL's turn
        return _decode_pil(path, resolution, resize)
    height, width = image.shape[-2:]
    if (width, height) != (resolution, resolution):
        new_w, new_h = _resized_shape(width, height, resolution, resize)
        image = tv_resize(image, [new_h, new_w], antialias=True)  # uint8 bilinear with antialias, as PIL's
        left, top = _centre_box(new_w, new_h, resolution)
        image = image[:, top : top + resolution, left : left + resolution]
    return image.contiguous()


def decode_image(
    path: str | os.PathLike, resolution: int, resize: int | None = None, decoder: str = DEFAULT_DECODER
) -> torch.Tensor:
    """One image file as uint8 ``(3, resolution, resolution)`` RGB.

    An image that is already ``resolution`` × ``resolution`` is taken as is
    (CIFAR at 32 px, ImageNet-C at 224 px). Otherwise its shorter side is
    resized (bilinear, antialiased) to ``resize`` (the usual 256 for 224-px
    ImageNet evaluation) or to ``resolution`` when ``resize`` is None, and
    the centre ``resolution`` × ``resolution`` is cropped — the standard
    ``Resize(256) + CenterCrop(224)`` evaluation transform.

    ``decoder`` (config ``data.decoder``): ``torchvision`` (the default)
    decodes with ``torchvision.io`` and resizes the uint8 tensor with torch's
    antialiased bilinear kernel; ``pil`` decodes and resizes with Pillow, as
    the references' torchvision transforms do. Both decode JPEGs with
    libjpeg-turbo to the same pixels, and torch's uint8 kernel follows
    Pillow's filter, so the two differ only in the resize's rounding: at most
    one grey level, on about 0.2 % of the values of an ImageNet-sized image
    (``bench/data_loader.py`` measures the speed and the difference). Files
    ``torchvision.io`` cannot read (BMP, TIFF, PPM) are decoded by Pillow
    either way. torchvision 0.29 deprecates ``torchvision.io``'s image
    decoders (for TorchCodec) but keeps them; the warning is silenced here.
    """
    if decoder == "pil":
        return _decode_pil(path, resolution, resize)
    if decoder == "torchvision":
        return _decode_torchvision(path, resolution, resize)
    raise ValueError(f"unknown image decoder {decoder!r}; expected one of {', '.join(DECODERS)} (config data.decoder)")


def decode_workers() -> int:
    """Threads that decode images (PIL releases the GIL while decoding and resizing).

    The job's torch thread budget (a workflow job sets it from its
    ``threads``), at most 8; ``ROBUSTSOUP_DECODE_WORKERS`` overrides it.
    """
    env = os.environ.get("ROBUSTSOUP_DECODE_WORKERS")
    if env:
        return max(1, int(env))
    return max(1, min(8, torch.get_num_threads()))


class FileSource(ImageSource):
    """Image files decoded on demand (see :func:`decode_image`) by ``decoder`` (None: the job's
    ``data.decoder``, :data:`robustsoup.data.options.OPTIONS`, read at each load), with per-image
    ``targets`` where the data set has them."""

    def __init__(
        self,
        paths: Sequence[Path],
        labels: torch.Tensor,
        resolution: int,
        resize: int | None = None,
        targets: torch.Tensor | None = None,
        decoder: str | None = None,
    ) -> None:
        if len(paths) != labels.shape[0]:
            raise ValueError(f"{len(paths)} files but {labels.shape[0]} labels")
        if targets is not None and (targets.ndim != 2 or targets.shape[0] != labels.shape[0]):
            raise ValueError(f"{labels.shape[0]} labels but targets of shape {tuple(targets.shape)}")
        self.paths = [Path(p) for p in paths]
        self.labels = labels.to(torch.int64)
        self.resolution = resolution
        self.resize = resize
        self.targets = None if targets is None else targets.to(torch.int64)
        self.decoder = decoder

    def load(self, indices) -> torch.Tensor:
        index = as_index(indices, len(self)).tolist()
        out = torch.empty((len(index), 3, self.resolution, self.resolution), dtype=torch.uint8)
        decoder = self.decoder or options.current().decoder

        def run(lo: int, hi: int) -> None:
            for slot in range(lo, hi):
                out[slot] = decode_image(self.paths[index[slot]], self.resolution, self.resize, decoder)

        # Small images decode faster than threads hand over work; big ones gain from threads.
        workers = decode_workers() if self.resolution >= 64 else 1
        workers = min(workers, max(1, len(index) // 4))
        if workers == 1:
            run(0, len(index))
        else:
            bounds = [len(index) * w // workers for w in range(workers + 1)]
            with ThreadPoolExecutor(workers) as pool:
                for future in [pool.submit(run, lo, hi) for lo, hi in itertools.pairwise(bounds)]:
                    future.result()
        return out


# ---------------------------------------------------------------------------
# Folder listings


def _visible(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".")


def list_subfolders(folder: Path) -> list[str]:
    """Names of the visible sub-folders of ``folder``, sorted."""
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if _visible(e) and e.is_dir())


def list_images(folder: Path) -> list[str]:
    """Names of the image files in ``folder`` (any of :data:`IMAGE_EXTENSIONS`), sorted."""
    with os.scandir(folder) as entries:
        return sorted(
            e.name for e in entries if _visible(e) and e.name.lower().endswith(IMAGE_EXTENSIONS) and e.is_file()
        )


def has_image(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image file (stops at the first one)."""
    with os.scandir(folder) as entries:
        return any(_visible(e) and e.name.lower().endswith(IMAGE_EXTENSIONS) for e in entries)


def scan_class_folders(
    folder: Path, label_of: Mapping[str, int], what: str, layout: str
) -> tuple[list[Path], torch.Tensor]:
    """Every image under ``folder/<class>/`` with the label ``label_of[<class>]``.

    Class folders missing from ``label_of`` are an error (the folder is not
    the data set it claims to be); classes of ``label_of`` without a folder
    are allowed (a subset), so long as at least one class is present.
    """
    if not folder.is_dir():
        raise DataLayoutError(f"{what}: folder {folder} does not exist.\nExpected layout:\n{layout}")
    classes = list_subfolders(folder)
    unknown = [c for c in classes if c not in label_of]
    if unknown:
        raise DataLayoutError(
            f"{what}: {folder} holds {len(unknown)} folder(s) that are not classes of this data set, "
            f"e.g. {unknown[:3]}; expected folders named like {list(label_of)[:3]}.\nExpected layout:\n{layout}"
        )
    if not classes:
        raise DataLayoutError(f"{what}: {folder} holds no class folders.\nExpected layout:\n{layout}")
    paths: list[Path] = []
    labels: list[int] = []
    empty = []
    for name in classes:
        files = list_images(folder / name)
        if not files:
            empty.append(name)
        paths.extend(folder / name / f for f in files)
        labels.extend([label_of[name]] * len(files))
    if empty:
        raise DataLayoutError(
            f"{what}: class folder(s) without images under {folder}: {empty[:5]}"
            f"{'…' if len(empty) > 5 else ''} (images: {', '.join(IMAGE_EXTENSIONS)})"
        )
    return paths, torch.as_tensor(labels, dtype=torch.int64)


def probe_class_folders(folder: Path, label_of: Mapping[str, int], what: str, layout: str) -> str:
    """Cheap layout check of ``folder/<class>/*``: the class folder names, and an image in the
    first, middle and last class folder; no full listing."""
    if not folder.is_dir():
        raise DataLayoutError(f"{what}: folder {folder} does not exist.\nExpected layout:\n{layout}")
    classes = list_subfolders(folder)
    unknown = [c for c in classes if c not in label_of]
    if unknown or not classes:
        scan_class_folders(folder, label_of, what, layout)  # raises with the full message
    sample = sorted({classes[0], classes[len(classes) // 2], classes[-1]})
    empty = [c for c in sample if not has_image(folder / c)]
    if empty:
        raise DataLayoutError(f"{what}: class folder(s) without images under {folder}: {empty[:5]}")
    return f"{len(classes)} class folders"


# ---------------------------------------------------------------------------
# Catalog


@dataclass
class Part:
    """How to build one part's source (``build``) and how to check it cheaply (``probe``)."""

    build: Callable[[], ImageSource]
    probe: Callable[[], str] | None = None


class Catalog(Mapping[str, ImageSource]):
    """Parts of a data set on disk by name; each source is built on first access and kept.

    ``description`` says which on-disk format was recognised (for the data
    check); ``layout`` is the expected layout shown in errors.
    """

    def __init__(self, dataset: str, root: Path | None, parts: Mapping[str, Part], description: str, layout: str = ""):
        self.dataset, self.root, self.description, self.layout = dataset, root, description, layout
        self._parts = dict(parts)
        self._built: dict[str, ImageSource] = {}

    def __getitem__(self, part: str) -> ImageSource:
        if part not in self._parts:
            raise KeyError(
                f"{self.dataset} has no part {part!r}; its parts are {list(self._parts)[:10]}"
                f"{'…' if len(self._parts) > 10 else ''}"
            )
        if part not in self._built:
            self._built[part] = self._parts[part].build()
        return self._built[part]

    def __iter__(self) -> Iterator[str]:
        return iter(self._parts)

    def __len__(self) -> int:
        return len(self._parts)

    def probe(self, part: str) -> str:
        """A cheap check of one part (no full listing where the reader can avoid it)."""
        definition = self._parts[part]
        if definition.probe is None:
            return f"{len(self[part])} images"
        return definition.probe()

    @classmethod
    def from_tensors(cls, dataset: str, images: torch.Tensor, labels: torch.Tensor, description: str) -> Catalog:
        """A one-part catalog (``all``) over images already in memory."""
        source = TensorSource(images, labels)
        return cls(dataset, None, {"all": Part(lambda: source)}, description)
