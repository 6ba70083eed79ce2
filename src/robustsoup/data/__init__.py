"""Data sets: registry, readers of every on-disk format, splits and the decoded uint8 cache."""

from . import (
    digits,  # noqa: F401  (registers the embedded default)
    sets,  # noqa: F401  (registers CIFAR, ImageNet and their shifts)
)
from .imagenet import imagenet_wnids, restrict_logits, subset_indices, subset_label_map, wnid_to_index
from .registry import DATASETS, DatasetSpec, get_dataset_spec, open_dataset, register_dataset
from .sources import (
    ArraySource,
    Catalog,
    DataLayoutError,
    FileSource,
    ImageSource,
    TensorSource,
    decode_image,
)
from .split_indices import adapt_test_split, stratified_split
from .split_layout import part_dir, shift_parts, split_paths, split_storage, splits_of
from .split_writing import prepare_shift_splits, prepare_splits
from .splits import SPLITS, FileSplit, ImageSplit, load_split

__all__ = [
    "DATASETS",
    "SPLITS",
    "ArraySource",
    "Catalog",
    "DataLayoutError",
    "DatasetSpec",
    "FileSource",
    "FileSplit",
    "ImageSource",
    "ImageSplit",
    "TensorSource",
    "adapt_test_split",
    "decode_image",
    "get_dataset_spec",
    "imagenet_wnids",
    "load_split",
    "open_dataset",
    "part_dir",
    "prepare_shift_splits",
    "prepare_splits",
    "register_dataset",
    "restrict_logits",
    "shift_parts",
    "split_paths",
    "split_storage",
    "splits_of",
    "stratified_split",
    "subset_indices",
    "subset_label_map",
    "wnid_to_index",
]
