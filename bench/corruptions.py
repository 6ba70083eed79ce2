"""Time generating every corruption × severity (19 × 5) on the digits test split.

Splits the embedded digits data set into a temporary directory (450 test
images, 32 × 32, as the default config does), then writes each corruption's
CIFAR-10-C file with ``write_corrupted_split`` (corruption, 5 severities,
atomic .npy write) and prints seconds per corruption and the total:

    .venv/bin/python bench/corruptions.py [--n 450] [--seed 0] [--only fog,snow] [--summary out.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from robustsoup.data import load_split, prepare_splits
from robustsoup.data.corruptions import CORRUPTIONS, FAMILIES, SEVERITIES, write_corrupted_split

from measurements import Measurement, write_summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=None, help="first n test images (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated corruptions (default: all 19)")
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    names = [c for c in args.only.split(",") if c] or list(CORRUPTIONS)

    with tempfile.TemporaryDirectory() as tmp:
        paths = prepare_splits("digits", Path(tmp) / "data", n_adapt=200, n_test=450, seed=0)
        split = load_split(paths["test"])
        images, labels = split.images[: args.n], split.labels[: args.n]
        out_dir = Path(tmp) / "corrupted"
        n, _, height, width = images.shape
        print(
            f"{n} images {height}×{width}, {len(names)} corruptions × {len(SEVERITIES)} severities, "
            f"cpus={os.cpu_count()}"
        )
        print(f"{'corruption':<20}{'family':<9}{'seconds':>9}{'img/s':>9}")
        total = 0.0
        for name in names:
            start = time.perf_counter()
            write_corrupted_split(images, None, out_dir, corruptions=[name], seed=args.seed)
            seconds = time.perf_counter() - start
            total += seconds
            print(f"{name:<20}{FAMILIES[name]:<9}{seconds:>9.3f}{n * len(SEVERITIES) / seconds:>9.0f}")
        start = time.perf_counter()
        write_corrupted_split(images, labels, out_dir, corruptions=[], seed=args.seed)
        total += time.perf_counter() - start
        print(
            f"{'total':<29}{total:>9.3f}   ({len(names) * len(SEVERITIES)} corruption × severity, "
            f"{len(names) * len(SEVERITIES) * n} images)"
        )
    goal = "<= 60" if len(names) == len(CORRUPTIONS) and n == 450 else ""
    write_summary(
        args.summary,
        [
            Measurement(
                "corruptions", f"{len(names)}×{len(SEVERITIES)} corruptions of {n} digits images", total, "s", goal
            )
        ],
    )


if __name__ == "__main__":
    main()
