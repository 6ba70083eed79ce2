"""Argument parsing shared by the subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path


def parse_path_and_number(spec: str, number: str, expected: str) -> tuple[Path, float]:
    """``PATH:NUMBER`` on the command line (the last colon splits, so paths may hold colons)."""
    path, sep, value = spec.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {spec!r}")
    try:
        return Path(path), float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{number} {value!r} in {spec!r} is not a number") from None
