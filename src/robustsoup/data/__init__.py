"""Data sets: registry, readers, stratified splits and the decoded uint8 cache."""

from . import digits  # noqa: F401  (registers the embedded default)
from .registry import DATASETS, DatasetSpec, get_dataset_spec, register_dataset
from .splits import SPLITS, ImageSplit, load_split, prepare_splits, stratified_split

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "ImageSplit",
    "SPLITS",
    "get_dataset_spec",
    "load_split",
    "prepare_splits",
    "register_dataset",
    "stratified_split",
]
