"""Peer ratio: soups scored per second as a fraction of bare forward passes over the same images.

Four ``preact_resnet18_rf`` ingredients (independent random initialisations; the cost of a forward
pass does not depend on the weights) and ``--images`` fixed 32×32 images. A: a bare forward pass of
one network over the images (batches of 512, the scorer's, under the same autocast and memory
format); B: :class:`robustsoup.soups.search.SoupScorer` scoring one soup of the four-model simplex
grid (mix the weights, load them in place, the same forward pass, the accuracy). Alternated pass by
pass in one run, with ``precision: auto`` and with float32. Checked equal: the bare pass, run on
the scorer's network with the last soup loaded, gives exactly the per-point correctness the scorer
reported for that soup.

Fraction: soups scored per second ÷ bare passes per second, the median over the soups of each
soup's ratio to the bare pass timed just before it (goal ≥ 0.9: mixing and loading a soup cost at
most about a tenth of scoring it).

    .venv/bin/python bench/peer_soups.py [--quick] [--images 1000] [--soups 12] [--summary out.json]

``--quick``: 64 images on a width-16 network, 4 soups.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from robustsoup.device import resolve_arithmetic
from robustsoup.models import create_model
from robustsoup.models.registry import IDENTITY_STATISTICS
from robustsoup.soups.grid import simplex_grid
from robustsoup.soups.search import SoupScorer

from measurements import Measurement, write_summary
from peer_common import load_note, machine_line

NAMES = ["a", "b", "c", "d"]
GOAL = ">= 0.9"


def measure(images: int, soups: int, width: int, device: str = "cpu", log=print) -> list[Measurement]:
    states = []
    for seed in range(len(NAMES)):
        torch.manual_seed(seed)
        states.append(create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS, width=width).state_dict())
    generator = torch.Generator().manual_seed(0)
    pixels = (torch.rand(images, 3, 32, 32, generator=generator) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (images,), generator=generator)
    grid = simplex_grid(len(NAMES), 0.25)[:soups]
    log(f"{len(grid)} soups of {len(NAMES)} preact_resnet18_rf (width {width}), {images} images at 32 px")
    rows = []
    for precision in ("auto", "float32"):
        arithmetic = resolve_arithmetic(precision, "auto", device)
        model = create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS, width=width)
        scorer = SoupScorer(model, states, NAMES, device=device, arithmetic=arithmetic)
        inputs = scorer.prepare(pixels)
        scorer.logits(inputs)  # warm-up (allocator, oneDNN primitives)
        bare, scored = [], []
        for weights in grid:
            start = time.perf_counter()
            logits = scorer.logits(inputs)
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            correct = scorer.correct(weights, inputs, labels)
            scored.append(time.perf_counter() - start)
        # the pass just timed ran the previous soup; run it once more on the last soup for the check
        logits = scorer.logits(inputs)
        if not torch.equal(logits.argmax(1).cpu() == labels, correct.cpu()):
            raise SystemExit(f"{precision}: the scorer's per-point results differ from a bare pass on the same soup")
        # each soup against the bare pass just before it: load drifts on a shared machine, a pair's ratio less
        fraction = statistics.median(b / s for b, s in zip(bare, scored, strict=True))
        log(
            f"{precision} ({arithmetic}): bare pass best {min(bare):.3f} s, soup scored best {min(scored):.3f} s; "
            f"median pair ratio {fraction:.3f} (goal {GOAL}); per-point results equal"
        )
        rows.append(
            Measurement(
                "peer_soups",
                f"soups scored / bare forward passes per second, {precision} ({arithmetic}), {images} images",
                fraction,
                "×",
                GOAL,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 images, width 16, 4 soups")
    parser.add_argument("--images", type=int, default=None, help="images (default 1000, the CIFAR preset's)")
    parser.add_argument("--soups", type=int, default=None, help="soups timed (default 12, quick 4)")
    parser.add_argument("--width", type=int, default=None, help="network width (default 64, quick 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    images = args.images or (64 if args.quick else 1000)
    soups = args.soups or (4 if args.quick else 12)
    width = args.width or (16 if args.quick else 64)
    print(machine_line(), flush=True)
    print(f"goal: soups scored per second {GOAL} of bare forward passes per second", flush=True)
    rows = measure(images, soups, width, args.device, log=lambda s: print(s, flush=True))
    print(f"measured under {load_note()}")
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
