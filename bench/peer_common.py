"""What the four peer benchmarks share: the machine line, A/B alternation, the reference checkouts.

A peer ratio compares robustsoup with the authors' code (or, without a
checkout, a plain loop that mirrors it) on the same work. Each is measured
in one run, alternating A and B (A B, B A, …: neither always first) on identical inputs, so
that load on a shared machine falls on both; the best time of each side is
kept (the first run of each pays one-time warm-up costs) and the two
results are checked equal before a ratio is printed.

The reference checkouts are the parity kit's (``tools/parity/README.md``
clones them into one folder, ``/tmp/refs`` there): ``--refs DIR`` (or
``ROBUSTSOUP_REFS``) names that folder; a missing checkout makes the
benchmark fall back, and say so.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from robustsoup.device import machine_summary

TOOLS_PARITY = Path(__file__).resolve().parents[1] / "tools" / "parity"
DEFAULT_REFS = Path(os.environ.get("ROBUSTSOUP_REFS", "/tmp/refs"))


def machine_line() -> str:
    """CPU capability (torch.backends.cpu.get_cpu_capability()), native bf16, threads, CUDA."""
    return f"machine: {machine_summary()}"


def checkout(refs: Path | None, name: str, marker: str) -> Path | None:
    """``refs/name`` if it holds ``marker`` (a file of that repository), else None."""
    if refs is None:
        return None
    folder = Path(refs) / name
    return folder if (folder / marker).is_file() else None


def parity_tools() -> None:
    """Make the parity kit's generator modules importable (their shims and checkout helpers)."""
    for folder in (TOOLS_PARITY, TOOLS_PARITY.parents[1] / "tests" / "parity"):
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


@dataclass
class Side:
    """One side of a comparison: its label, every wall time, the last result."""

    label: str
    run: Callable[[], object]
    seconds: list[float] = field(default_factory=list)
    result: object = None

    @property
    def best(self) -> float:
        return min(self.seconds)


def pair_ratios(a: Side, b: Side) -> list[float]:
    """A's time over B's for each round (each pair ran back to back, so shared load falls on both)."""
    return [ta / tb for ta, tb in zip(a.seconds, b.seconds, strict=True)]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


class CountingModel(nn.Module):
    """``model`` unchanged, counting its forward passes and the images they took: the work a side did,
    which load on a shared machine does not move (both sides get the same wrapper)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.calls = self.images = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.images += x.shape[0]
        return self.model(x)

    def reset(self) -> tuple[int, int]:
        """(forward passes, images) since the last reset; starts counting afresh."""
        counted = self.calls, self.images
        self.calls = self.images = 0
        return counted


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def alternate(a: Side, b: Side, rounds: int, device: torch.device | str = "cpu", log=print) -> tuple[Side, Side]:
    """Run ``a`` and ``b``, ``rounds`` times over, in the order A B, B A, A B …, so that neither side always
    runs first (the first run of a process pays its allocations); keep every time and the last results."""
    for r in range(rounds):
        for side in (a, b) if r % 2 == 0 else (b, a):
            synchronize(device)
            start = time.perf_counter()
            side.result = side.run()
            synchronize(device)
            side.seconds.append(time.perf_counter() - start)
            log(f"  round {r + 1}/{rounds} {side.label}: {side.seconds[-1]:.2f} s")
    return a, b


def load_note() -> str:
    """The 1-minute load average against the cores (a shared machine's timings are noisy)."""
    try:
        one = os.getloadavg()[0]
    except OSError:
        return "load unknown"
    return f"load average {one:.1f} on {os.cpu_count()} cores"
