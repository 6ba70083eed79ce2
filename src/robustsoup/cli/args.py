"""Argument parsing shared by the subcommands: numbers after a colon, output paths, device flags."""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path

import torch


class UsageError(ValueError):
    """A command-line argument that cannot be used as given (the message names the flag)."""


def warn(text: str) -> None:
    """A warning on stderr, in the commands' voice."""
    print(f"robustsoup: warning: {text}", file=sys.stderr)


def companions(path: Path) -> list[Path]:
    """A checkpoint or signature path and its .json sidecar (what reading or writing it touches)."""
    path = Path(path)
    return [path, path.with_suffix(".json")]


def check_output(flag: str, output: Path, inputs: Iterable[Path], extra: Iterable[Path] = ()) -> None:
    """Refuse an output (with its sidecar and any ``extra`` file it writes) that is one of the inputs (or
    their sidecars), an output that is not a .safetensors path, or one in a folder that does not exist:
    checked before anything is read, so a refused command writes and changes nothing."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise UsageError(
            f"{flag} {output}: expected a .safetensors path (the .json sidecar is written beside it); "
            f"give e.g. {flag} {output.with_suffix('.safetensors')}"
        )
    if not output.parent.is_dir():
        raise UsageError(f"{flag} {output}: the folder {output.parent} does not exist; create it or choose another")
    written = {p.resolve(): p for p in [*companions(output), *extra]}
    for source in inputs:
        for path in companions(source):
            if path.resolve() in written:
                raise UsageError(
                    f"{flag} {output}: it would overwrite {written[path.resolve()]}, which is an input of "
                    f"this command ({source}); choose another output path"
                )


def parse_device(text: str):
    """``--device``: cpu, auto, cuda or cuda:N, checked against this machine; a torch.device."""
    wanted = text.strip().lower()
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", wanted)
    if match is None:
        raise UsageError(f"--device {text}: expected cpu, cuda, cuda:N (a GPU index) or auto; e.g. --device cpu")
    if not torch.cuda.is_available():
        raise UsageError(
            f"--device {text}: this machine has no CUDA device that torch can use; "
            "pass --device cpu, or --device auto (CUDA when present, else the CPU)"
        )
    index = int(match.group(1) or 0)
    if index >= torch.cuda.device_count():
        raise UsageError(
            f"--device {text}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0; "
            "pass --device cuda:0 or --device auto"
        )
    return torch.device(f"cuda:{index}")


def parse_path_and_number(spec: str, number: str, expected: str) -> tuple[Path, float]:
    """``PATH:NUMBER`` on the command line (the last colon splits, so paths may hold colons)."""
    path, sep, value = spec.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected {expected}, found {spec!r}")
    try:
        parsed = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{number} {value!r} in {spec!r} is not a number; expected {expected}"
        ) from None
    if not math.isfinite(parsed):
        raise argparse.ArgumentTypeError(f"{number} {value!r} in {spec!r}: expected a finite number, as in {expected}")
    return Path(path), parsed
