"""Peer ratio: generating CIFAR-10-C (15 corruptions × 5 severities), per image against batched.

``--images`` fixed 32×32 images (smooth colour fields with edges and noise, like photographs at
that size). B: hendrycks/robustness's own per-image functions (``make_cifar_c.py`` from a local
checkout, ``--refs DIR/robustness``, imported with the parity kit's shims; ImageMagick through Wand
for motion_blur and snow), called on one PIL image at a time as its script does, then
``np.uint8``; without a checkout, robustsoup's own per-image path (``corrupt`` on one image at a
time, one thread), and every line says so. A: robustsoup batched: :func:`corrupt` on all the
images at once, ``workers`` = the cores. Alternated corruption by corruption (A's five severities,
then B's), on ``--cores`` cores (the process is pinned to them when the machine has more).

Checked equal: the six deterministic corruptions (defocus, zoom, brightness, contrast, pixelate,
JPEG) give the same bytes from A and from hendrycks' functions on every image; every corruption
gives the same bytes from A and from the per-image path (seeded per image) on the first
``--check`` images. Goal: A's images per second ≥ 3× B's on 2 cores.

    .venv/bin/python bench/peer_corruptions.py [--quick] [--images 1000] [--cores 2] [--refs /tmp/refs]

``--quick``: 24 images.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import time
from pathlib import Path

import numpy as np
import torch

from robustsoup.data.corruption_ops import RANDOM_OPS
from robustsoup.data.corruptions import SEVERITIES, STANDARD_CORRUPTIONS, corrupt

from measurements import Measurement, write_summary
from peer_common import DEFAULT_REFS, checkout, load_note, machine_line, parity_tools

GOAL = ">= 3"


def test_images(n: int, seed: int = 0) -> np.ndarray:
    """uint8 (n, 32, 32, 3): smooth random colour fields, a hard-edged block each, mild noise."""
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((n, 32, 32, 3), dtype=np.uint8)
    for i in range(n):
        field = cv2.resize(rng.uniform(0, 255, (4, 4, 3)).astype(np.float32), (32, 32))
        top, left = rng.integers(0, 24, 2)
        field[top : top + 8, left : left + 8] = rng.uniform(0, 255, 3)
        out[i] = np.clip(field + rng.normal(0, 6, field.shape), 0, 255).astype(np.uint8)
    return out


class Hendrycks:
    """make_cifar_c.py's corruption functions, per image, with the parity kit's shims."""

    def __init__(self, folder: Path) -> None:
        parity_tools()
        import gen_hendrycks_robustness as kit

        self.folder = kit.add_checkout_to_path(folder, "ImageNet-C", "create_c")
        kit._install_shims()
        self.functions = kit.load_reference(self.folder)
        np.random.seed(0)

    def __call__(self, images: np.ndarray, name: str, severity: int) -> np.ndarray:
        from PIL import Image

        function = self.functions[name]
        with contextlib.chdir(self.folder):  # it opens its frost textures relative to its folder
            return np.stack([np.uint8(function(Image.fromarray(image), severity)) for image in images])


def per_image(images: np.ndarray, name: str, severity: int) -> np.ndarray:
    """robustsoup's per-image path: one image per call, one thread (the seeds follow the index)."""
    return np.stack(
        [corrupt(image, name, severity, layout="HWC", index_offset=i, workers=1) for i, image in enumerate(images)]
    )


def pin(cores: int) -> int:
    """Pin this process to its first ``cores`` CPUs (if it has more); the cores it runs on."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) > cores:
        os.sched_setaffinity(0, available[:cores])
    used = min(cores, len(available))
    torch.set_num_threads(used)
    import cv2

    cv2.setNumThreads(used)
    return used


def measure(n: int, cores: int, check: int, refs: Path | None, log=print) -> list[Measurement]:
    """Time both sides corruption by corruption on ``cores`` cores (the process's CPU affinity and
    thread counts are restored afterwards); one row, A's images per second over B's."""
    affinity, threads = os.sched_getaffinity(0), torch.get_num_threads()
    try:
        return _measure(n, pin(cores), check, refs, log)
    finally:
        os.sched_setaffinity(0, affinity)
        torch.set_num_threads(threads)


def _measure(n: int, used: int, check: int, refs: Path | None, log) -> list[Measurement]:
    images = test_images(n)
    folder = checkout(refs, "robustness", "ImageNet-C/create_c/make_cifar_c.py")
    reference = Hendrycks(folder) if folder is not None else None
    peer = f"hendrycks/robustness per image ({folder})" if reference else "FALLBACK robustsoup per image (no checkout)"
    log(f"CIFAR-10-C, {len(STANDARD_CORRUPTIONS)} corruptions × {len(SEVERITIES)} severities of {n} images")
    log(f"A: robustsoup batched, {used} threads; B: {peer}, on {used} cores")
    log(f"{'corruption':<20}{'A s':>8}{'B s':>9}{'B/A':>7}  check")
    total_a = total_b = 0.0
    for name in STANDARD_CORRUPTIONS:
        start = time.perf_counter()
        ours = {s: corrupt(images, name, s, layout="NHWC", workers=used) for s in SEVERITIES}
        seconds_a = time.perf_counter() - start
        start = time.perf_counter()
        theirs = {s: (reference or per_image)(images, name, s) for s in SEVERITIES}
        seconds_b = time.perf_counter() - start
        total_a, total_b = total_a + seconds_a, total_b + seconds_b
        if reference is None or name not in RANDOM_OPS:  # same draws (or none): same bytes
            unequal = [s for s in SEVERITIES if not np.array_equal(ours[s], theirs[s])]
            what = "= B, every image"
        else:
            unequal = [s for s in SEVERITIES if not np.array_equal(ours[s][:check], per_image(images[:check], name, s))]
            what = f"= per image, first {check}"
        if unequal:
            raise SystemExit(f"{name}: batched output differs ({what.replace('=', 'from')}) at severities {unequal}")
        log(f"{name:<20}{seconds_a:>8.2f}{seconds_b:>9.2f}{seconds_b / seconds_a:>6.1f}×  {what}")
    done = n * len(STANDARD_CORRUPTIONS) * len(SEVERITIES)
    ratio = total_b / total_a
    log(
        f"{'total':<20}{total_a:>8.2f}{total_b:>9.2f}{ratio:>6.1f}×  "
        f"A {done / total_a:.0f} images/s, B {done / total_b:.0f} images/s (goal {GOAL}×)"
    )
    label = "hendrycks per-image" if reference else "robustsoup per-image (FALLBACK, no checkout)"
    return [
        Measurement(
            "peer_corruptions",
            f"batched / {label} images per second, CIFAR-10-C 15×5 of {n} images, {used} cores",
            ratio,
            "×",
            GOAL if used == 2 else "",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="24 images")
    parser.add_argument("--images", type=int, default=None, help="images (default 1000, quick 24)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--check", type=int, default=None, help="images checked against the per-image path")
    parser.add_argument("--refs", type=Path, default=DEFAULT_REFS, help="folder of the parity kit's checkouts")
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    n = args.images or (24 if args.quick else 1000)
    check = min(n, args.check or (8 if args.quick else 50))
    print(machine_line(), flush=True)
    print(f"goal: batched corruption {GOAL}× the per-image path's images per second on 2 cores", flush=True)
    rows = measure(n, args.cores, check, args.refs, log=lambda s: print(s, flush=True))
    print(f"measured under {load_note()}")
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
