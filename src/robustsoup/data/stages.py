"""The data rules' functions (rule X → workflow/scripts/X.py → X here): split and cache the data
set, split each shifted set, and write the corrupted copies of a split."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .corrupted import write_corrupted_copies
from .registry import dataset_name
from .split_layout import shift_parts
from .split_writing import prepare_shift_splits, prepare_splits
from .splits import load_split


def prepare_data(config: Mapping, split_paths: Mapping[str, str | Path]) -> dict[str, Path]:
    """Read the config's data set once and write its train / adapt / test splits to ``split_paths``
    ({split: file}, one folder; the train split cut to ``data.train_per_class`` images per class, the
    test split to ``data.test_per_class``, when those are set)."""
    data = config["data"]
    folders = {Path(p).parent for p in split_paths.values()}
    if len(folders) != 1:
        raise ValueError(f"prepare_data writes every split into one folder; found {sorted(map(str, folders))}")
    written = prepare_splits(
        dataset_name(config),
        folders.pop(),
        n_adapt=data["n_adapt"],
        n_test=data["n_test"],
        seed=data["split_seed"],
        root=data["root"],
        k_adapt_per_class=data["k_adapt_per_class"],
        cache_max_images=data["cache_max_images"],
        train_per_class=data["train_per_class"],
        test_per_class=data["test_per_class"],
    )
    if {s: Path(p) for s, p in written.items()} != {s: Path(p) for s, p in split_paths.items()}:
        raise ValueError(f"prepare_data wrote {written}, the workflow expected {dict(split_paths)}")
    return written


def prepare_shift(config: Mapping, shift: str, out_dir: str | Path) -> dict[str, dict[str, Path]]:
    """The adapt / test split of every configured part of the shifted set ``shift`` under ``out_dir``
    (each test split cut to ``data.test_per_class`` images per class when that is set)."""
    data = config["data"]
    return prepare_shift_splits(
        shift,
        data["shifts"][shift],
        out_dir,
        parts=shift_parts(shift, data["corruptions"], data["severities"]),
        seed=data["split_seed"],
        k_adapt_per_class=data["k_adapt_per_class"],
        cache_max_images=data["cache_max_images"],
        test_per_class=data["test_per_class"],
    )


def corrupt_split(config: Mapping, split_path: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Corrupted copies of one cached split (every configured corruption and severity) in ``out_dir``:
    Hendrycks' ``.npy`` arrays for a decoded split, ImageNet-C folders of JPEGs for a file list
    (:mod:`.corrupted`), at the constants of the images' resolution."""
    data = config["data"]
    return write_corrupted_copies(
        load_split(split_path),
        out_dir,
        corruptions=data["corruptions"],
        severities=data["severities"],
        seed=config["seed"],
    )
