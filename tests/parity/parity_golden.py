"""Reading the golden files of the parity tests (written by ``tools/parity/gen_*.py`` from the references)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden"


def load_npz(name: str) -> tuple[dict[str, np.ndarray], dict]:
    """The arrays of ``golden/<name>.npz`` and its ``meta`` record (reference, commit, script, …)."""
    path = GOLDEN / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"golden file {path} is missing; regenerate it as tools/parity/README.md says")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    meta = json.loads(arrays.pop("meta").item())
    return arrays, meta


def load_json(name: str) -> dict:
    path = GOLDEN / f"{name}.json"
    if not path.is_file():
        raise FileNotFoundError(f"golden file {path} is missing; regenerate it as tools/parity/README.md says")
    return json.loads(path.read_text())


class LegacyDraws:
    """A ``numpy.random.Generator``-like face on ``RandomState(seed)``: the draws the reference made.

    The reference scripts draw from NumPy's global legacy state after ``np.random.seed(seed)``;
    robustsoup's operations draw from one Generator per image by these method names. Handing them
    this adapter gives them the reference's very draws, so random corruptions and training
    samplers can be compared value for value.
    """

    def __init__(self, seed: int) -> None:
        self.state = np.random.RandomState(seed)

    def normal(self, loc=0.0, scale=1.0, size=None):
        return self.state.normal(loc, scale, size)

    def uniform(self, low=0.0, high=1.0, size=None):
        return self.state.uniform(low, high, size)

    def integers(self, low, high=None, size=None):
        return self.state.randint(low, high, size)

    def poisson(self, lam=1.0, size=None):
        return self.state.poisson(lam, size)

    def random(self, size=None):
        return self.state.random_sample(size)
