"""Corruptions on file-list (ImageNet-sized) data: on-the-fly training batches and the ImageNet-C copies.

Writes ``--n`` random JPEGs of ``--size`` pixels into class folders, caches them as an ImageNet
file-list split (decoded at 224 px: resize 256, centre crop), then per corruption of ``--only``
(default: the 15 standard ones) times, per image:

- ``decode``: decoding a batch from the file list (what every training batch costs anyway);
- ``on the fly``: :class:`robustsoup.train.loop.CorruptionInputs` on the decoded batch, as an expert,
  the teacher or the augmentation baseline trains (severities 1..5 drawn per image);
- ``copies``: :func:`robustsoup.data.corrupted.write_corrupted_files`, one severity (the chunked
  decode, the corruption and the quality-85 JPEG of the ImageNet-C layout).

It prints milliseconds per image and the ratio of each to decoding:

    .venv/bin/python bench/filelist_corruptions.py [--n 32] [--size 500] [--only fog,contrast] [--summary out.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustsoup.data import imagenet_wnids, load_split, prepare_splits
from robustsoup.data.corrupted import write_corrupted_files
from robustsoup.data.corruptions import STANDARD_CORRUPTIONS
from robustsoup.train.policies import CorruptionInputs

from measurements import Measurement, write_summary


def write_fixture(root: Path, n: int, size: int) -> None:
    """``n`` random JPEGs (``size`` × ¾``size``) in 2 wnid folders of train/ and val/."""
    rng = np.random.default_rng(0)
    wnids = imagenet_wnids()[:2]
    for part in ("train", "val"):
        for i in range(n):
            folder = root / part / wnids[i % 2]
            folder.mkdir(parents=True, exist_ok=True)
            array = rng.integers(0, 255, (size * 3 // 4, size, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / f"{i}.JPEG", quality=90)


def per_image_ms(seconds: float, n: int) -> float:
    return 1000 * seconds / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32, help="images (one batch)")
    parser.add_argument("--size", type=int, default=500, help="width of the JPEGs on disk")
    parser.add_argument("--only", default="", help="comma-separated corruptions (default: the 15 standard ones)")
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    names = [c for c in args.only.split(",") if c] or list(STANDARD_CORRUPTIONS)
    with tempfile.TemporaryDirectory() as tmp:
        write_fixture(Path(tmp) / "raw", args.n, args.size)
        paths = prepare_splits("imagenet", Path(tmp) / "data", root=Path(tmp) / "raw", cache_max_images=0)
        split = load_split(paths["train"])
        index = torch.arange(len(split))
        start = time.perf_counter()
        batch = split.load(index)
        decode = per_image_ms(time.perf_counter() - start, len(split))
        x = batch.float().div_(255.0)
        print(f"{len(split)} images {args.size} px → 224 px, threads={torch.get_num_threads()}, cpus={os.cpu_count()}")
        print(f"decode: {decode:.1f} ms/image")
        print(f"{'corruption':<20}{'on the fly':>12}{'× decode':>10}{'copies':>10}{'× decode':>10}")
        fly_total = copies_total = 0.0
        for name in names:
            policy = CorruptionInputs([name], [1, 2, 3, 4, 5], seed=0)
            start = time.perf_counter()
            policy(None, x, None)
            fly = per_image_ms(time.perf_counter() - start, len(split))
            start = time.perf_counter()
            write_corrupted_files(split, Path(tmp) / "copies", [name], [3], seed=0)
            copies = per_image_ms(time.perf_counter() - start, len(split))
            fly_total, copies_total = fly_total + fly, copies_total + copies
            print(f"{name:<20}{fly:>12.1f}{fly / decode:>10.1f}{copies:>10.1f}{copies / decode:>10.1f}")
        k = len(names)
        print(f"{'mean':<20}{fly_total / k:>12.1f}{fly_total / k / decode:>10.1f}{copies_total / k:>10.1f}")
    write_summary(
        args.summary,
        [
            Measurement("filelist_decode", "decode a 224-px file-list image", decode, "ms", ""),
            Measurement(
                "filelist_on_the_fly", f"corrupt a 224-px training image (mean of {k})", fly_total / k, "ms", ""
            ),
            Measurement("filelist_copies", f"write one ImageNet-C copy (mean of {k})", copies_total / k, "ms", ""),
        ],
    )


if __name__ == "__main__":
    main()
