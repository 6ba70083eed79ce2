"""State-dict algebra: affine combinations of models fine-tuned from one parent.

Floating tensors (weights, biases, BatchNorm running statistics) are
combined; integer buffers (``num_batches_tracked``) are carried from the
first model. Every operation checks that the state dicts describe the same
architecture and names the first key that differs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]


class WeightMismatchError(ValueError):
    """State dicts that cannot be combined: other keys, shapes or dtypes."""


def check_compatible(states: Sequence[StateDict], names: Sequence[str] | None = None) -> None:
    """Raise :class:`WeightMismatchError` unless all ``states`` share keys, shapes and dtypes."""
    if not states:
        raise WeightMismatchError("no state dicts given")
    names = list(names) if names is not None else [f"model {i}" for i in range(len(states))]
    reference = states[0]
    for name, state in zip(names[1:], states[1:]):
        missing = [k for k in reference if k not in state]
        extra = [k for k in state if k not in reference]
        if missing or extra:
            key = (missing or extra)[0]
            where = f"{names[0]} has it, {name} does not" if missing else f"{name} has it, {names[0]} does not"
            raise WeightMismatchError(f"key {key!r}: {where}; the models are of different architectures")
        for key, tensor in reference.items():
            other = state[key]
            if other.shape != tensor.shape or other.dtype != tensor.dtype:
                raise WeightMismatchError(
                    f"key {key!r}: {names[0]} has {tuple(tensor.shape)} {tensor.dtype}, "
                    f"{name} has {tuple(other.shape)} {other.dtype}"
                )


class WeightStack:
    """The floating tensors of compatible state dicts, stacked per key: the one soup mixer.

    :meth:`mix` gives Σ wᵢ θᵢ for any weight vector; ``make_soup`` (through
    :func:`affine_combination`), the soup scorer and learned soups all mix
    through it, so a soup is the same tensors wherever it is built. BatchNorm
    running variances of an extrapolated soup can fall below zero (or near
    it), which would blow up the normalized activations; each is floored at
    the smallest variance that an ingredient with non-zero weight has for that
    channel, which leaves interpolations (a convex combination is never below
    that minimum) untouched. ``keys`` maps each stacked name to the key it
    has in the states (e.g. ``conv1.weight`` → ``net.conv1.weight``).
    """

    def __init__(
        self,
        states: Sequence[StateDict],
        names: Sequence[str] | None = None,
        keys: Mapping[str, str] | None = None,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        check_compatible(states, names)
        keys = keys if keys is not None else {k: k for k, v in states[0].items() if torch.is_floating_point(v)}
        self.stacked = {
            name: torch.stack([s[key].detach().to(device, dtype) for s in states]) for name, key in keys.items()
        }

    def mix(self, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """Σ wᵢ θᵢ per stacked key; differentiable in ``weights`` except for BatchNorm running
        statistics (statistics, not parameters: they follow the weights without a gradient)."""
        nonzero = weights.detach() != 0
        mixed = {}
        for key, stacked in self.stacked.items():
            statistic = key.endswith(("running_mean", "running_var"))
            value = torch.tensordot(weights.detach() if statistic else weights, stacked, dims=1)
            if key.endswith("running_var") and bool(nonzero.any()):
                value = torch.maximum(value, stacked[nonzero].amin(dim=0))
            mixed[key] = value
        return mixed


def affine_combination(
    states: Sequence[StateDict], weights: Sequence[float], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """θ = Σ wᵢ θᵢ over floating tensors (:class:`WeightStack`, in float64, cast back to each
    tensor's dtype); integer tensors are copied from ``states[0]``.

    Exact where it can be: a weight vector with a single 1 and zeros
    elsewhere returns that model's tensors bit for bit.
    """
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} state dicts but {len(weights)} weights")
    check_compatible(states, names)
    one_hot = [i for i, w in enumerate(weights) if w != 0]
    if len(one_hot) == 1 and weights[one_hot[0]] == 1:
        return {k: v.clone() for k, v in states[one_hot[0]].items()}
    mixed = WeightStack(states, names, dtype=torch.float64).mix(
        torch.tensor([float(w) for w in weights], dtype=torch.float64)
    )
    return {k: mixed[k].to(v.dtype) if k in mixed else v.clone() for k, v in states[0].items()}


def _floating_binary(a: StateDict, b: StateDict, op, names=("a", "b")) -> dict[str, torch.Tensor]:
    check_compatible([a, b], names)
    return {k: op(v, b[k]) if torch.is_floating_point(v) else v.clone() for k, v in a.items()}


def add(a: StateDict, b: StateDict) -> dict[str, torch.Tensor]:
    """a + b over floating tensors; integer buffers from ``a``."""
    return _floating_binary(a, b, torch.add)


def subtract(a: StateDict, b: StateDict) -> dict[str, torch.Tensor]:
    """a − b over floating tensors; integer buffers from ``a``."""
    return _floating_binary(a, b, torch.sub)


def scale(a: StateDict, factor: float) -> dict[str, torch.Tensor]:
    """factor · a over floating tensors; integer buffers unchanged."""
    return {k: v * factor if torch.is_floating_point(v) else v.clone() for k, v in a.items()}


def task_vector(model: StateDict, parent: StateDict) -> dict[str, torch.Tensor]:
    """τ = θ_model − θ_parent (Ilharco et al. 2023): what fine-tuning changed."""
    return subtract(model, parent)


def apply_task_vectors(
    parent: StateDict, vectors: Sequence[StateDict], coefficients: Sequence[float]
) -> dict[str, torch.Tensor]:
    """θ_parent + Σ λᵢ τᵢ; with Σ over fine-tunes of one parent this is a soup with weights
    (1 − Σλᵢ, λ₁, …), so every soup is also a point of task arithmetic."""
    if len(vectors) != len(coefficients):
        raise ValueError(f"{len(vectors)} task vectors but {len(coefficients)} coefficients")
    result = {k: v.clone() for k, v in parent.items()}
    for vector, coefficient in zip(vectors, coefficients):
        result = add(result, scale(vector, coefficient))
    return result


def layer_norms(state: StateDict) -> dict[str, float]:
    """L2 norm of every floating tensor (e.g. of a task vector, per layer)."""
    return {k: float(v.detach().double().norm()) for k, v in state.items() if torch.is_floating_point(v)}
