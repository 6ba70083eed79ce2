"""State-dict algebra: affine combinations of models fine-tuned from one parent.

Floating tensors (weights, biases, BatchNorm running statistics) are
combined; integer buffers (``num_batches_tracked``) are carried from the
first model. Every operation checks that the state dicts describe the same
architecture and names the first key that differs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

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


def affine_combination(
    states: Sequence[StateDict], weights: Sequence[float], names: Sequence[str] | None = None
) -> dict[str, torch.Tensor]:
    """θ = Σ wᵢ θᵢ over floating tensors; integer tensors are copied from ``states[0]``.

    Exact where it can be: a weight vector with a single 1 and zeros
    elsewhere returns that model's tensors bit for bit. Sums are accumulated
    in float64 and cast back to each tensor's dtype. BatchNorm running
    variances of an extrapolated soup can fall below zero (or near it), which
    would blow up the normalized activations; each is floored at the smallest
    variance any ingredient has for that channel, which leaves interpolations
    (a convex combination is never below that minimum) untouched.
    """
    if len(states) != len(weights):
        raise ValueError(f"{len(states)} state dicts but {len(weights)} weights")
    check_compatible(states, names)
    one_hot = [i for i, w in enumerate(weights) if w != 0]
    combined: dict[str, torch.Tensor] = {}
    for key, first in states[0].items():
        if not torch.is_floating_point(first):
            combined[key] = first.clone()
            continue
        if len(one_hot) == 1 and weights[one_hot[0]] == 1:
            combined[key] = states[one_hot[0]][key].clone()
            continue
        total = torch.zeros(first.shape, dtype=torch.float64)
        for state, w in zip(states, weights):
            if w != 0:
                total += float(w) * state[key].detach().to("cpu", torch.float64)
        if key.endswith("running_var"):
            floor = torch.stack([states[i][key].to("cpu", torch.float64) for i in one_hot]).amin(dim=0)
            total = torch.maximum(total, floor)
        combined[key] = total.to(first.dtype)
    return combined


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


def apply_task_vectors(parent: StateDict, vectors: Sequence[StateDict], coefficients: Sequence[float]
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
