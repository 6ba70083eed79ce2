"""State-dict algebra: affine combinations of models fine-tuned from one parent.

Floating tensors (weights, biases, BatchNorm running statistics) are
combined; integer buffers (``num_batches_tracked``) are carried from the
first model. Every operation checks that the state dicts describe the same
architecture and names the first key that differs.

Partial state dicts (a subset of the keys, e.g. the shallow-layer deltas of a
robust weight signature) are combined with :func:`sparse_combination` and added
to a model with :func:`apply_delta`; soups, task vectors and signatures all use
this one algebra.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import torch

StateDict = Mapping[str, torch.Tensor]


class WeightMismatchError(ValueError):
    """State dicts that cannot be combined: other keys, shapes or dtypes."""


def check_compatible(
    states: Sequence[StateDict], names: Sequence[str] | None = None, keys: Sequence[str] | None = None
) -> None:
    """Raise :class:`WeightMismatchError` unless all ``states`` share keys, shapes and dtypes.

    With ``keys``, only those keys are checked: every state must hold each of them, with the
    same shape and dtype (the other keys may differ).
    """
    if not states:
        raise WeightMismatchError("no state dicts given")
    names = list(names) if names is not None else [f"model {i}" for i in range(len(states))]
    if keys is not None:
        for name, state in zip(names, states):
            absent = [k for k in keys if k not in state]
            if absent:
                raise WeightMismatchError(
                    f"key {absent[0]!r}: {name} does not have it ({len(absent)} of the {len(keys)} keys "
                    "asked for are missing); the models are of different architectures"
                )
    reference = states[0] if keys is None else {k: states[0][k] for k in keys}
    for name, state in zip(names[1:], states[1:]):
        missing = [k for k in reference if k not in state]
        extra = [k for k in state if k not in reference] if keys is None else []
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
    through it, so a soup is the same tensors wherever it is built. Every
    entry, BatchNorm running statistics included, is the plain weighted sum
    (mlfoundations/model-soups' rule). Only where an extrapolated soup's
    running variance would be ≤ 0 (no valid variance: the normalization would
    divide by ~√ε or take the root of a negative number) is it replaced by the
    smallest variance that an ingredient with non-zero weight has for that
    channel; every positive variance is left as the weighted sum, and
    interpolations never reach the floor. ``keys`` maps each stacked name to
    the key it has in the states (e.g. ``conv1.weight`` → ``net.conv1.weight``).
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
                value = torch.where(value > 0, value, stacked[nonzero].amin(dim=0))
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


def _floating_binary(
    a: StateDict,
    b: StateDict,
    op,
    names: Sequence[str] = ("a", "b"),
    keys: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    check_compatible([a, b], names, keys)

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(dtype) if dtype is not None else t

    selected = a if keys is None else {k: a[k] for k in keys}
    return {k: op(cast(v), cast(b[k])) if torch.is_floating_point(v) else v.clone() for k, v in selected.items()}


def subtract(
    a: StateDict,
    b: StateDict,
    keys: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
    names: Sequence[str] = ("a", "b"),
) -> dict[str, torch.Tensor]:
    """a − b over floating tensors; integer buffers from ``a``.

    ``keys`` restricts the result (and the compatibility check) to those keys: a partial
    state dict. ``dtype`` casts both operands first (e.g. float64: subtract at a higher
    precision than the models are stored in).
    """
    return _floating_binary(a, b, torch.sub, names, keys, dtype)


def scale(a: StateDict, factor: float) -> dict[str, torch.Tensor]:
    """factor · a over floating tensors; integer buffers unchanged."""
    return {k: v * factor if torch.is_floating_point(v) else v.clone() for k, v in a.items()}


def task_vector(
    model: StateDict,
    parent: StateDict,
    keys: Sequence[str] | None = None,
    dtype: torch.dtype | None = None,
    names: Sequence[str] = ("model", "parent"),
) -> dict[str, torch.Tensor]:
    """τ = θ_model − θ_parent (Ilharco et al. 2023): what fine-tuning changed (over ``keys`` only,
    in ``dtype``, when given; see :func:`subtract`)."""
    return subtract(model, parent, keys, dtype, names)


def sparse_combination(
    parts: Sequence[StateDict],
    weights: Sequence[float],
    mean: bool = False,
    dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """Σ wᵢ δᵢ over partial state dicts: each key of their union summed over the parts that hold it.

    The parts need not share keys (signatures over different layers); a key held by several
    must have one shape. Summed in ``dtype`` in the order given, the first term as it is
    (w₁δ₁, not 0 + w₁δ₁), so a single part with weight 1 comes back exactly. ``mean``
    divides each key by the sum of the weights of the parts that hold it (a weighted mean;
    with equal weights, the mean of those parts).
    """
    if len(parts) != len(weights):
        raise ValueError(f"{len(parts)} partial state dicts but {len(weights)} weights")
    total: dict[str, torch.Tensor] = {}
    weight_sum: dict[str, float] = {}
    for i, (part, weight) in enumerate(zip(parts, weights)):
        for key, value in part.items():
            if key in total and tuple(total[key].shape) != tuple(value.shape):
                raise WeightMismatchError(
                    f"key {key!r}: part {i} has shape {tuple(value.shape)}, an earlier part "
                    f"{tuple(total[key].shape)}; the parts belong to different architectures"
                )
            term = float(weight) * value.detach().to(dtype)
            total[key] = total[key] + term if key in total else term
            weight_sum[key] = weight_sum.get(key, 0.0) + float(weight)
    if mean:
        zero = [k for k, w in weight_sum.items() if w == 0]
        if zero:
            raise ValueError(f"key {zero[0]!r}: the weights of the parts that hold it sum to 0; no mean exists")
        total = {k: v / weight_sum[k] for k, v in total.items()}
    return total


def apply_delta(
    base: StateDict, delta: StateDict, log_scale: Collection[str] = (), dtype: torch.dtype = torch.float64
) -> dict[str, torch.Tensor]:
    """θ + δ on the keys of the partial state dict ``delta`` only (the other keys are not returned).

    Computed on the CPU in ``dtype`` (the same bits on every device), then cast back to each
    base tensor's dtype and device. Keys in ``log_scale`` hold positive quantities (e.g.
    BatchNorm running variances) and are multiplied by exp(δ) instead, so they stay positive.
    """
    out = {}
    for key, change in delta.items():
        if key not in base:
            raise WeightMismatchError(f"key {key!r}: the delta has it, the model does not; other architecture")
        original = base[key]
        if tuple(original.shape) != tuple(change.shape) or not torch.is_floating_point(original):
            raise WeightMismatchError(
                f"key {key!r}: the model has {tuple(original.shape)} {original.dtype}, the delta "
                f"{tuple(change.shape)}; expected a floating tensor of the delta's shape"
            )
        value = original.detach().to("cpu", dtype)
        change = change.detach().to("cpu", dtype)
        value = value * torch.exp(change) if key in log_scale else value + change
        out[key] = value.to(original.dtype).to(original.device)
    return out
