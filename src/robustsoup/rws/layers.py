"""Which tensors a Robust Weight Signature covers (:func:`plan_layers`): two layer rules.

Rule ``ours`` (``rws.layer_rule: ours``)
    A *weight layer* is a module whose ``weight`` has two or more dimensions (convolution, linear).
    A signature keeps the first ``k`` weight layers in network order — the order of the state
    dict, i.e. of module registration — with their biases (``k=None``: every layer). The *prefix*
    of the network is every key before the (k+1)-th weight layer. Normalization layers are
    handled as configured:

    - ``norm_affine=True``: the 1-D ``weight``/``bias`` of normalization layers in the prefix
      (BatchNorm, LayerNorm, GroupNorm) are projected like any weight (kind ``norm``). This is
      ours: the reference never projects BatchNorm parameters (see rule ``reference``);
    - ``statistics``: BatchNorm running statistics are *data* statistics, not fitted weights, so
      they are never projected. Their signature is the expert's statistics relative to the
      standard model's: ``μ_e − μ_std`` for running means and ``log v_e − log v_std`` for running
      variances, patched as μ + λ·δ and v · exp(λ·δ) (variances stay positive for every λ, and
      λ = 1 on the standard model gives the expert's statistics exactly). ``"none"`` keeps the
      standard model's statistics, ``"selected"`` patches the BatchNorms of the prefix, ``"all"``
      every BatchNorm (2 numbers per channel: a few KB). On the digits default, the patched model
      is only as good as its statistics: weights patched onto the standard model's statistics do
      not help.

Rule ``reference`` (``rws.layer_rule: reference``; VITA-Group/Robust_Weight_Signatures,
``tools.py`` ``select_layers`` and ``model_patching.py`` ``decompose``)
    A *layer* is the stem or a residual block: each weight layer belongs to the shortest prefix of
    its module name that ends in an index (an element of a Sequential or ModuleList, e.g.
    ``layers.0``), or is a layer of its own (the stem; every convolution of a VGG). The classifier
    (the last weight layer, 2-D and in no block) is never counted. The first ``k`` layers'
    weights and biases are projected (kind ``weight``). Every BatchNorm (affine parameters and
    running statistics) and every shortcut (a module named ``*downsample*`` or ``*shortcut*``),
    in all layers, is replaced by the mean of the experts patched in (kind ``replace``: the
    expert's own tensor, neither projected nor λ-scaled; one expert gives its values exactly).
    Other normalization layers (LayerNorm) are left alone. The reference then re-estimates the
    running statistics of ResNet-50 on corrupted training images; we keep the experts' mean, so
    patching needs no data.

    ``num_batches_tracked`` and other integer buffers are never touched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .config import LAYER_RULES
from .signatures import SignatureError, StateDict

STATISTICS = ("none", "selected", "all")
SHORTCUT_NAMES = ("downsample", "shortcut")  # module names of projection shortcuts (any case)


def _module(key: str) -> str:
    return key.rpartition(".")[0]


def weight_layers(state: StateDict) -> list[str]:
    """Module names of the weight layers (``weight`` with ≥ 2 dims), in state-dict order."""
    return [
        _module(k)
        for k, v in state.items()
        if k.rpartition(".")[2] == "weight" and torch.is_floating_point(v) and v.dim() >= 2
    ]


def batchnorm_layers(state: StateDict) -> list[str]:
    """Module names that hold BatchNorm running statistics, in state-dict order."""
    return [_module(k) for k in state if k.endswith(".running_mean") and f"{_module(k)}.running_var" in state]


def residual_unit(module: str) -> str:
    """The reference's layer a module belongs to: the shortest prefix of its name that ends in an
    index (``net.layers.0.conv1`` → ``net.layers.0``), else the module itself (``net.conv1``)."""
    parts = module.split(".")
    for end in range(1, len(parts)):
        if parts[end - 1].isdigit():
            return ".".join(parts[:end])
    return module


def reference_layers(state: StateDict) -> dict[str, list[str]]:
    """The reference's layers in network order, each with its weight layers: the stem and the
    residual blocks (every convolution of a VGG), without the classifier."""
    layers = weight_layers(state)
    if layers and residual_unit(layers[-1]) == layers[-1] and state[f"{layers[-1]}.weight"].dim() == 2:
        layers = layers[:-1]  # the classifier: never counted
    units: dict[str, list[str]] = {}
    for layer in layers:
        units.setdefault(residual_unit(layer), []).append(layer)
    return units


def _is_shortcut(module: str) -> bool:
    return any(name in part.lower() for part in module.split(".") for name in SHORTCUT_NAMES)


@dataclass
class LayerPlan:
    """What a signature covers: the selected layers and every tensor with its kind.

    Kinds: ``weight`` (weights and biases of weight layers), ``norm`` (affine parameters of
    normalization layers), ``mean`` / ``logvar`` (BatchNorm running statistics relative to the
    standard model's), ``replace`` (rule ``reference``: BatchNorm and shortcut tensors set to the
    experts' mean). ``layers`` are weight layers (rule ``ours``) or stems and residual blocks
    (rule ``reference``).
    """

    layers: list[str]
    tensors: dict[str, str]
    k: int | None
    norm_affine: bool
    statistics: str
    rule: str = "ours"


def plan_layers(
    state: StateDict, k: int | None = 5, norm_affine: bool = True, statistics: str = "all", rule: str = "ours"
) -> LayerPlan:
    """The tensors of a signature over the first ``k`` layers (``None``: all of them).

    See the module docstring for the two rules; ``norm_affine`` and ``statistics`` apply to rule
    ``ours`` only. Raises :class:`SignatureError` if the state dict has no weight layer, ``k`` < 1,
    or ``statistics`` or ``rule`` is unknown.
    """
    if rule not in LAYER_RULES:
        raise SignatureError(f"unknown layer rule {rule!r}; expected one of {LAYER_RULES}")
    if statistics not in STATISTICS:
        raise SignatureError(f"unknown BatchNorm statistics mode {statistics!r}; expected one of {STATISTICS}")
    layers = weight_layers(state)
    if not layers:
        raise SignatureError("the state dict has no weight layer (no floating 'weight' with ≥ 2 dimensions)")
    if k is not None and k < 1:
        raise SignatureError(f"a signature needs at least one layer, got k={k}")
    if rule == "reference":
        return _plan_reference(state, k)
    chosen = layers if k is None or k >= len(layers) else layers[:k]
    keys = list(state)
    cut = len(keys) if len(chosen) == len(layers) else keys.index(f"{layers[len(chosen)]}.weight")
    prefix = keys[:cut]
    bn = set(batchnorm_layers(state))
    chosen_set = set(chosen)
    tensors: dict[str, str] = {}
    for key in prefix:
        module, _, leaf = key.rpartition(".")
        value = state[key]
        if not torch.is_floating_point(value):
            continue
        if module in chosen_set and leaf in ("weight", "bias"):
            tensors[key] = "weight"
        elif (
            leaf in ("weight", "bias")
            and norm_affine
            and module not in chosen_set
            and value.dim() == 1
            and (module in bn or (f"{module}.weight" in state and state[f"{module}.weight"].dim() == 1))
        ):
            tensors[key] = "norm"
        elif statistics == "selected" and module in bn and leaf in ("running_mean", "running_var"):
            tensors[key] = "mean" if leaf == "running_mean" else "logvar"
    if statistics == "all":
        for key in keys:
            module, _, leaf = key.rpartition(".")
            if module in bn and leaf in ("running_mean", "running_var"):
                tensors[key] = "mean" if leaf == "running_mean" else "logvar"
        tensors = {key: tensors[key] for key in keys if key in tensors}  # network order
    return LayerPlan(layers=chosen, tensors=tensors, k=k, norm_affine=norm_affine, statistics=statistics)


def _plan_reference(state: StateDict, k: int | None) -> LayerPlan:
    units = reference_layers(state)
    if not units:
        raise SignatureError("the state dict has no layer but its classifier; the reference rule counts none")
    chosen = list(units)[:k] if k is not None else list(units)
    selected = {layer for unit in chosen for layer in units[unit]}
    bn = set(batchnorm_layers(state))
    tensors: dict[str, str] = {}
    for key, value in state.items():
        module, _, leaf = key.rpartition(".")
        if not torch.is_floating_point(value):
            continue
        if module in bn or _is_shortcut(module):
            tensors[key] = "replace"
        elif module in selected and leaf in ("weight", "bias"):
            tensors[key] = "weight"
    return LayerPlan(layers=chosen, tensors=tensors, k=k, norm_affine=False, statistics="replace", rule="reference")


__all__ = [
    "SHORTCUT_NAMES",
    "STATISTICS",
    "LayerPlan",
    "batchnorm_layers",
    "plan_layers",
    "reference_layers",
    "residual_unit",
    "weight_layers",
]
