"""Soup search speed: the in-place scorer against the naive path, and successive halving.

Uses the base models and splits of a finished run (default: the embedded
default's `results/digits/`; run `make run` first). Prints, measured in one run:

1. soups evaluated per second on the adaptation split for the in-place
   scorer (float32, and bf16 + channels_last) and for the naive path (a new
   model, state dict and DataLoader per soup), over the 4-model simplex
   grid, and their ratios (goal ≥ 3×); the naive path reads the split's
   cache file per soup; a last row starts a new Python process per soup,
   as one workflow job per soup would;
2. for successive halving against full grid search: forward passes used and
   the held-out (test split) accuracy of each pick (goal: ≤ 1/3 of the
   passes, within 0.5 points).

    .venv/bin/python bench/soups.py [--results results/digits] [--step 0.1] [--naive-soups 50] [--summary out.json]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from robustsoup.checkpoint import load_checkpoint
from robustsoup.data import load_split
from robustsoup.device import Arithmetic, cpu_native_bf16
from robustsoup.models import Normalized
from robustsoup.soups.grid import simplex_grid
from robustsoup.soups.search import SoupScorer, grid_search, successive_halving
from robustsoup.weights import StateDict, affine_combination

from measurements import Measurement, write_summary

BASE = ["linf", "linf-l2", "linf-l1", "linf-nominal"]


def naive_accuracy(
    build: Callable[[], Normalized],
    states: Sequence[StateDict],
    weights: Sequence[float],
    split_path,
    batch_size: int = 512,
) -> float:
    """The slow path the scorer replaces, as a per-soup evaluation job does it: a new model and
    state dict, the split read from its cache file, a DataLoader that converts every batch."""
    model = build().eval()
    model.load_state_dict(affine_combination(states, weights))
    split = load_split(split_path)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(split.images, split.labels), batch_size=batch_size
    )
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x.float() / 255.0).argmax(1) == y).sum())
    return correct / len(split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("results/digits"))
    parser.add_argument("--step", type=float, default=0.1)
    parser.add_argument("--naive-soups", type=int, default=50)
    parser.add_argument("--process-soups", type=int, default=5)
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    paths = [args.results / "seed-0" / "models" / f"{name}.safetensors" for name in BASE]  # seed 0's models
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"missing base models {missing}; run `make run` (or point --results at a run) first")
    loaded = [load_checkpoint(p) for p in paths]
    states = [state for state, _ in loaded]
    meta = loaded[0][1]
    adapt = load_split(args.results / "data" / "adapt.safetensors")
    test = load_split(args.results / "data" / "test.safetensors")
    grid = [dict(zip(BASE, w)) for w in simplex_grid(len(BASE), args.step)]
    print(f"{len(grid)} soups of {len(BASE)} models, {len(adapt)} adaptation images, {torch.get_num_threads()} threads")

    rates = {}
    arithmetics = {"in-place fp32": Arithmetic("float32"), "in-place bf16+cl": Arithmetic("bf16", True)}
    for label, arithmetic in arithmetics.items():
        scorer = SoupScorer(meta.build(), states, BASE, arithmetic=arithmetic)
        inputs = scorer.prepare(adapt.images)
        start = time.perf_counter()
        for weights in grid:
            scorer.accuracy(weights, inputs, adapt.labels)
        rates[label] = len(grid) / (time.perf_counter() - start)
    subset = grid[: args.naive_soups]
    start = time.perf_counter()
    for weights in subset:
        naive_accuracy(meta.build, states, [weights[n] for n in BASE], args.results / "data" / "adapt.safetensors")
    rates["naive"] = len(subset) / (time.perf_counter() - start)
    # The per-soup job of a workflow: a new Python process per soup (torch import included).
    spawned = grid[: args.process_soups]
    start = time.perf_counter()
    for weights in spawned:
        code = (
            "import sys; from robustsoup.checkpoint import load_checkpoint; "
            f"sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); from soups import naive_accuracy; "
            f"paths = {[str(p) for p in paths]!r}; loaded = [load_checkpoint(p) for p in paths]; "
            "print(naive_accuracy(loaded[0][1].build, [s for s, _ in loaded], "
            f"{[weights[n] for n in BASE]!r}, {str(args.results / 'data' / 'adapt.safetensors')!r}))"
        )
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    rates["naive, process per soup"] = len(spawned) / (time.perf_counter() - start)
    print(f"{'path':<20}{'soups/s':>10}{'× naive':>10}")
    for label, rate in rates.items():
        print(f"{label:<20}{rate:>10.1f}{rate / rates['naive']:>9.2f}×")

    scorer = SoupScorer(meta.build(), states, BASE)
    inputs, test_inputs = scorer.prepare(adapt.images), scorer.prepare(test.images)
    full = grid_search(scorer, grid, inputs, adapt.labels)
    halving = successive_halving(scorer, grid, inputs, adapt.labels, first_images=16, keep=1 / 3)
    # The 3x goal is for bf16 where it is native (what `precision: auto` picks there). In float32
    # both paths pay the same forward passes, and forced bf16 where it is emulated is not a path.
    auto = "in-place bf16+cl" if cpu_native_bf16() else None
    rows = [
        Measurement(
            "soups",
            f"{label} / naive soups per second ({len(grid)} soups)",
            rates[label] / rates["naive"],
            "×",
            ">= 3" if label == auto else "",
        )
        for label in arithmetics
    ]
    print(f"\n{'search':<12}{'passes':>10}{'share':>8}{'adapt acc':>11}{'test acc':>10}  weights")
    tested = {}
    for selection in (full, halving):
        held_out = scorer.accuracy(selection.weights, test_inputs, test.labels)
        weights = " ".join(f"{n}={w:g}" for n, w in selection.weights.items() if w)
        print(
            f"{selection.method:<12}{selection.forward_passes:>10}"
            f"{selection.forward_passes / full.forward_passes:>8.2f}"
            f"{100 * selection.adaptation_accuracy:>10.1f}%{100 * held_out:>9.1f}%  {weights}"
        )
        tested[selection.method] = 100 * held_out
    rows.append(
        Measurement(
            "soups",
            "successive halving / grid search forward passes",
            halving.forward_passes / full.forward_passes,
            "×",
            "<= 0.3334",
        )
    )
    rows.append(
        Measurement(
            "soups",
            "grid search − successive halving held-out accuracy",
            tested[full.method] - tested[halving.method],
            "points",
            "<= 0.5",
        )
    )
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
