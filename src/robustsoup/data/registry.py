"""Data set registry: a name maps to its spec and to a reader of its parts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from .sources import Catalog, DataLayoutError

if TYPE_CHECKING:
    import torch

# A reader takes the data root (None for embedded sets) and returns either
#   * a Catalog: named parts ("train", "test", "val", "fog/3", "all"), each an
#     ImageSource decoded on demand, or
#   * (images, labels): the whole set in memory as uint8 (N, 3, H, W) images
#     and int64 (N,) labels, i.e. one part named "all" (the embedded digits).
# open_dataset() turns either into a Catalog.
Reader = Callable[..., Union[Catalog, "tuple[torch.Tensor, torch.Tensor]"]]

# How the splits train / adapt / test come out of a data set's parts:
#   stratified  one part ("all"), split 3-way by class (n_adapt, n_test)
#   official    train = the official training part; adapt = the first k
#               images per class (seeded) of the official test part, test = the rest
#   shift       no training images: for each part, adapt = the first k per
#               class (seeded), test = the rest (natural shifts and -C sets)
SPLIT_SCHEMES = ("stratified", "official", "shift")

# How `augmentation: standard` crops a data set's training images (robustsoup.train.augment applies them):
#   pad      zero-pad by `padding` pixels, cut a random window of the original size
#            (torchvision's RandomCrop(size, padding): the CIFAR references)
#   resized  a random window of `scale` × the area, aspect ratio log-uniform in `ratio`, resized
#            back to the resolution (RandomResizedCrop: the ImageNet references)
CROPS = ("pad", "resized")

# What counts as a right prediction (robustsoup.data.scoring applies them):
#   argmax      the model's argmax equals the label
#   subset      the argmax over the logits of ``class_subset``'s classes (ImageNet-R, -A)
#   label-sets  the argmax is in the image's set of right classes (ImageNet-ReaL)
#   categories  the best of 16 categories, each the mean probability of its classes (cue-conflict)
SCORINGS = ("argmax", "subset", "label-sets", "categories")


IMAGEFOLDER = "imagefolder"  # config `dataset` of your own folder tree (robustsoup.data.imagefolder)


def dataset_name(config: Mapping[str, Any]) -> str:
    """The name a run's data set goes by (results/<name>/, split caches, sidecars): ``data.name`` for an
    ImageFolder (default ``imagefolder``), else the registry name ``dataset``."""
    if config["dataset"] != IMAGEFOLDER:
        return config["dataset"]
    return config.get("data", {}).get("name") or IMAGEFOLDER


@dataclass(frozen=True)
class TrainAugmentation:
    """The random crop (see :data:`CROPS`) and flip of ``augmentation: standard`` for one data set.

    ``augmentation: crop`` applies the crop alone. ``flip``: random horizontal
    flips (probability 1/2); False where the mirror image of a training image
    is no image of the set, ``why`` saying so.
    """

    crop: str = "pad"
    padding: int = 4
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: bool = True
    why: str = ""

    def __post_init__(self) -> None:
        if self.crop not in CROPS:
            raise ValueError(f"crop must be one of {CROPS}, found {self.crop!r}")
        if self.padding < 0:
            raise ValueError(f"padding must be ≥ 0, found {self.padding}")
        if not 0 < self.scale[0] <= self.scale[1] <= 1 or not 0 < self.ratio[0] <= self.ratio[1]:
            raise ValueError(f"need 0 < scale ≤ 1 and 0 < ratio ascending, found {self.scale}, {self.ratio}")

    def describe(self, flip: bool | None = None) -> str:
        """``pad-crop(4)+flip``-like words for sidecars and logs (``flip`` overrides the spec's)."""
        crop = f"pad-crop({self.padding})" if self.crop == "pad" else "resized-crop({:g}-{:g})".format(*self.scale)
        return crop + ("+flip" if (self.flip if flip is None else flip) else "")


# The papers' threat radii (ε in [0,1] pixel space) by image size: CIFAR's at 32 px (Croce & Hein 2022:
# L∞ 8/255, L2 0.5, L1 12), ImageNet's at 224 px (L∞ 4/255, L2 2, L1 255).
CIFAR_THREATS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}
IMAGENET_THREATS = {"Linf": 4 / 255, "L2": 2.0, "L1": 255.0}


def default_threats(resolution: int) -> dict[str, float]:
    """The documented threat radii of a data set of ``resolution`` pixels: CIFAR's up to 64, ImageNet's above."""
    return dict(CIFAR_THREATS if resolution <= 64 else IMAGENET_THREATS)


def default_augmentation(resolution: int) -> TrainAugmentation:
    """The references' training augmentation for images of ``resolution`` pixels: CIFAR's up to 64, ImageNet's above."""
    return TrainAugmentation(crop="pad", padding=4) if resolution <= 64 else TrainAugmentation(crop="resized")


@dataclass(frozen=True)
class DatasetSpec:
    """What a model needs to know about its data set, and how to read it.

    ``mean`` and ``std`` are per-channel statistics in [0,1] pixel space; the
    model normalizes its input with them, so attacks work in pixel space.

    The remaining fields describe the data on disk: ``split_scheme`` (see
    :data:`SPLIT_SCHEMES`) with the official ``train_part`` / ``test_part``;
    ``nominal_sizes`` the size of each part of the published data set (key
    ``"*"``: every part), which decides, before anything is read, whether a
    split is cached decoded or as a file list; ``lazy`` whether its images
    are files that can be decoded on demand; ``resize`` the shorter side
    before the centre crop (None: resize to ``resolution``); ``class_subset``
    the name of the wnid list whose classes the labels index (a 200-class
    subset of ImageNet, see :mod:`robustsoup.data.imagenet`); ``base`` the
    data set whose models are evaluated on this one (a shift of ``base``);
    ``layout`` the expected layout under the data root, shown in errors.
    ``augmentation`` is what training with ``augmentation: standard`` does
    to its images (None: the default for the resolution, :func:`default_augmentation`;
    a registration that differs says so, e.g. digits: the crop, never a flip).
    ``scoring`` is what counts as a right prediction (:data:`SCORINGS`;
    ``subset`` wherever ``class_subset`` is set).
    ``threats`` are the data set's documented radii, what a config without
    ``threats`` gets (None: :func:`default_threats` of the resolution; empty:
    none, the config must state them). ``class_names`` are the label names in
    label order where the data set defines them by its folders (an ImageFolder);
    ``mean`` / ``std`` are None where they are computed from the training split
    (see :mod:`robustsoup.data.imagefolder`). ``file_lists`` are the splits cached as file lists
    whatever their size (an ImageFolder whose corrupted copies are found by file name).
    """

    name: str
    num_classes: int
    resolution: int
    mean: tuple[float, float, float] | None
    std: tuple[float, float, float] | None
    description: str
    reader: Reader = field(repr=False, compare=False)
    split_scheme: str = "stratified"
    train_part: str = "train"
    test_part: str = "test"
    nominal_sizes: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)
    lazy: bool = False
    resize: int | None = None
    class_subset: str | None = None
    base: str | None = None
    needs_root: bool = True
    layout: str = field(default="", repr=False, compare=False)
    augmentation: TrainAugmentation | None = None
    scoring: str = "argmax"
    threats: Mapping[str, float] | None = field(default=None, compare=False)
    class_names: tuple[str, ...] | None = None
    file_lists: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.split_scheme not in SPLIT_SCHEMES:
            raise ValueError(
                f"data set {self.name}: split_scheme must be one of {SPLIT_SCHEMES}, found {self.split_scheme!r}"
            )
        if self.class_subset and self.scoring == "argmax":
            object.__setattr__(self, "scoring", "subset")
        if self.scoring not in SCORINGS or (self.scoring == "subset") != bool(self.class_subset):
            raise ValueError(
                f"data set {self.name}: scoring must be one of {SCORINGS} ('subset' exactly when class_subset "
                f"is set), found {self.scoring!r} with class_subset {self.class_subset!r}"
            )
        if self.augmentation is None:
            object.__setattr__(self, "augmentation", default_augmentation(self.resolution))
        if self.threats is None:
            object.__setattr__(self, "threats", default_threats(self.resolution))

    @property
    def is_shift(self) -> bool:
        """A set without training images, evaluated with models of :attr:`base`."""
        return self.split_scheme == "shift"

    def nominal_size(self, part: str) -> int:
        """Images in ``part`` of the published data set (0 if unknown)."""
        return int(self.nominal_sizes.get(part, self.nominal_sizes.get("*", 0)))


DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to the registry under its name (names are unique)."""
    if spec.name in DATASETS:
        raise ValueError(f"data set {spec.name!r} is registered twice")
    DATASETS[spec.name] = spec
    return spec


def get_dataset_spec(name: str) -> DatasetSpec:
    """Look a data set up by registry name, with a clear error for unknown names."""
    try:
        return DATASETS[name]
    except KeyError:
        raise KeyError(
            f"unknown data set {name!r}; registered: {sorted(DATASETS)} (your own ImageFolder tree: "
            "dataset: imagefolder with data.root, data.resolution and threats)"
        ) from None


def open_dataset(name: str, root: str | Path | None = None) -> Catalog:
    """The parts of data set ``name`` found under ``root``, as a :class:`Catalog`.

    Raises :class:`DataLayoutError` when the root is needed but not given, or
    when the layout under it is not one the reader knows.
    """
    spec = get_dataset_spec(name)
    if spec.needs_root:
        if root is None or str(root) == "":
            raise DataLayoutError(
                f"data set {name} is read from disk but no data root was given "
                f"(config key data.root, or --root).\nExpected layout:\n{spec.layout}"
            )
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DataLayoutError(
                f"data set {name}: data root {root} does not exist or is not a folder.\nExpected layout:\n{spec.layout}"
            )
    result = spec.reader(root)
    if isinstance(result, Catalog):
        return result
    images, labels = result
    return Catalog.from_tensors(name, images, labels, spec.description)
