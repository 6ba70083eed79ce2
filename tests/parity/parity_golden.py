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


def formula_tensor(shape: tuple[int, ...], index: int, scale: float) -> np.ndarray:
    """Fixed float32 values in [−scale, scale] from integer arithmetic alone (the same bits on every machine).

    The weights of the parity models come from here, in the generators (before running the
    reference) and in the tests, so no golden file has to carry a network's weights.
    """
    n = int(np.prod(shape, dtype=np.int64))
    codes = (np.arange(n, dtype=np.int64) * 2654435761 + 40503 * (index + 1)) % 2001 - 1000
    return (codes.astype(np.float64) * (scale / 1000.0)).astype(np.float32).reshape(shape)


def formula_state(named_shapes: list[tuple[str, tuple[int, ...]]]) -> dict[str, np.ndarray]:
    """Fixed values for every floating tensor of a state dict, by key order and role.

    Weights of convolutions and linear layers: ±1/√fan-in; BatchNorm scales 1 ± 0.2, shifts ± 0.1,
    running means ± 0.1, running variances 1 ± 0.5 (positive); biases ± 0.1.
    """
    state = {}
    for index, (key, shape) in enumerate(named_shapes):
        if key.endswith("running_var"):
            state[key] = formula_tensor(shape, index, 0.5) + np.float32(1.0)
        elif key.endswith(("running_mean", "bias")):
            state[key] = formula_tensor(shape, index, 0.1)
        elif len(shape) == 1:  # a BatchNorm scale
            state[key] = formula_tensor(shape, index, 0.2) + np.float32(1.0)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[key] = formula_tensor(shape, index, 1.0 / np.sqrt(fan_in))
    return state


def tiny_classifier():
    """The small network every attack golden runs on: conv 3→6, softplus, 2×2 average pool, linear to 10 classes.

    Inputs are (N, 3, 8, 8) in [0, 1]; the weights are :func:`formula_state`'s.
    """
    import torch
    from torch import nn

    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.Softplus(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(6 * 4 * 4, 10)
    )
    shapes = [(key, tuple(value.shape)) for key, value in model.state_dict().items()]
    model.load_state_dict({key: torch.from_numpy(value) for key, value in formula_state(shapes).items()})
    return model.eval()


def rws_states(keys: list[str], shapes: list[tuple[int, ...]], floating: list[bool]):
    """An initialization, a standard model and two experts over ``keys``: torch state dicts of formula values.

    The standard model and the experts are the initialization plus their own formula deltas
    (scale 0.1); running variances stay positive; integer entries (``num_batches_tracked``) are 0.
    """
    import torch

    def state(offset: int, step: float) -> dict:
        out = {}
        for index, (key, shape, real) in enumerate(zip(keys, shapes, floating, strict=True)):
            if not real:
                out[key] = torch.zeros(shape, dtype=torch.int64)
                continue
            base = formula_tensor(shape, index, 0.5) + np.float32(1.0 if key.endswith("running_var") else 0.0)
            out[key] = torch.from_numpy(base + formula_tensor(shape, index + offset, step))
        return out

    return state(0, 0.0), state(1000, 0.1), [state(2000, 0.1), state(3000, 0.1)]
