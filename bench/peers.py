"""The four peer ratios in one call, for ``bench/gpu.py`` (or any script that has a device).

:func:`peer_ratios` runs the ``measure`` function of ``peer_training``, ``peer_autoattack`` and
``peer_soups`` on ``device`` and ``peer_corruptions`` on two of the machine's CPU cores (the
corruptions run on CPU threads), at sizes for an accelerator (or, with ``quick``, smaller), and
returns their :class:`measurements.Measurement` rows. Every line it logs says which peer ran
(a reference checkout under ``refs``, or the fallback).

    .venv/bin/python bench/peers.py [--device cuda] [--quick] [--refs /tmp/refs] [--summary out.json]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import peer_autoattack
import peer_corruptions
import peer_soups
import peer_training
from measurements import Measurement, write_summary
from peer_common import DEFAULT_REFS, load_note, machine_line

# Sizes on a CUDA device (full, quick); a CPU gets the benchmarks' own defaults.
CUDA_SIZES = {
    False: {"batches": 20, "batch": 128, "points": 64, "images": 1000, "soups": 12, "corrupt": 1000},
    True: {"batches": 6, "batch": 128, "points": 16, "images": 1000, "soups": 6, "corrupt": 200},
}
CPU_SIZES = {
    False: {"batches": 2, "batch": 128, "points": 16, "images": 1000, "soups": 12, "corrupt": 1000},
    True: {"batches": 1, "batch": 16, "points": 4, "images": 64, "soups": 4, "corrupt": 24},
}


def peer_ratios(device: str = "cuda", quick: bool = False, refs: Path | None = DEFAULT_REFS, log=print):
    """The four peer ratios' rows, measured on ``device`` (corruptions: on 2 CPU cores)."""
    cuda = torch.device(device).type == "cuda"
    size = (CUDA_SIZES if cuda else CPU_SIZES)[quick]
    rounds = 1 if quick else 2
    width = 64 if cuda else (4 if quick else 16)  # the AutoAttack peer's network (its CPU defaults)
    log(machine_line())
    rows: list[Measurement] = []
    rows += peer_training.measure(size["batches"], size["batch"], rounds, refs, device, log)
    rows += peer_autoattack.measure(size["points"], 1, width, device, log)
    rows += peer_soups.measure(size["images"], size["soups"], 64 if cuda or not quick else 16, device, log)
    rows += peer_corruptions.measure(size["corrupt"], 2, min(50, size["corrupt"]), refs, log)
    log(f"measured under {load_note()}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--refs", type=Path, default=DEFAULT_REFS, help="folder of the parity kit's checkouts")
    parser.add_argument("--summary", type=Path, default=None, help="also write the rows here (JSON)")
    args = parser.parse_args()
    rows = peer_ratios(args.device, args.quick, args.refs, log=lambda s: print(s, flush=True))
    for row in rows:
        print(f"{row.measure}: {row.value:.3g}{row.unit} (goal {row.goal or 'none'}, met: {row.met or 'n/a'})")
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
