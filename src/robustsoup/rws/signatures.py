"""Robust Weight Signatures (Cai et al. 2023): robustness to a corruption as a small weight patch.

Given a shared initialization θ₀, a standard model θ_std and a corruption expert θ_e, both
fine-tuned from θ₀, the signature of the expert is, per tensor,

    Δ = θ_e − θ₀,   â = (θ_std − θ₀) / ‖θ_std − θ₀‖,   RWS = Δ − (Δ·â) â

(the part of the expert's move orthogonal to the standard model's move; a tensor the standard
model did not move keeps RWS = Δ). Patching is θ = θ_std + Σ λᵢ RWSᵢ, λ used once (the reference
code multiplies by λ twice). Every delta goes through :mod:`robustsoup.weights` (task vectors,
:func:`~robustsoup.weights.sparse_combination`, :func:`~robustsoup.weights.apply_delta`); this
module adds the projection, the layer rules, quantization and the file format.

Which tensors (:func:`plan_layers`), rule ``ours`` (``rws.layer_rule: ours``)
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

Quantization (:func:`quantize_signatures`)
    Linear over [min, max] per tensor: value = offset + code·scale with offset = min and
    scale = (max − min)/(L − 1) for L levels, error at most half a level. Two ways to give L:

    - ``levels=L`` (the reference's ``linear_quant`` takes a number of levels; the paper's
      "16-bit" and "8-bit" signatures are 16 and 8 levels): codes of ⌈log₂ L⌉ bits packed into
      one uint8 byte stream (4 bits a value for 16 levels, 3 for 8). Only the projected tensors
      (kinds ``weight``, ``norm``) are quantized, as the reference quantizes only its projected
      vectors; statistics and replaced tensors stay float32.
    - ``bits=b``: 2^b levels, codes stored as uint8 (b ≤ 8) or uint16, every tensor but the
      replaced ones quantized.

    [min, max] is per tensor of each signature (``value_range="signature"``) or, as the
    reference's ``decompose``, per key over all the signatures quantized together
    (``"experts"``). Per tensor, a float64 ``scale`` and ``offset`` are stored.

Storage
    One ``.safetensors`` file (numpy arrays, no pickle) plus a JSON sidecar (what the signature
    is, from which checkpoints, per-tensor norms, the file's SHA-256 and size). Float tensors
    are stored as float32 under their key; bit codes under their key; packed level codes in one
    ``__codes__`` stream; ``__scale__`` and ``__offset__`` hold one entry per quantized tensor,
    in the sidecar's (sorted) key order. Sizes are the files' byte counts.

Exact unpatch
    :func:`patched_state` never modifies its input: it returns a new state dict whose untouched
    entries are the base tensors and whose touched entries are new. :func:`apply_signatures`
    patches a live model in place and returns a :class:`Patch` holding exact copies of the
    touched tensors, so :meth:`Patch.remove` restores them bit for bit (float addition is not
    invertible: (θ + λr) − λr ≠ θ in general, so nothing is ever subtracted back). A patched
    checkpoint written by :func:`patch_checkpoint` carries those originals in a companion file
    ``<name>.unpatch.safetensors``, from which :func:`unpatch_checkpoint` restores the standard
    model and checks it against the recorded content hash.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from ..checkpoint import file_sha256, read_sidecar, sidecar_path
from ..io import atomic_path, write_text_atomic
from ..weights import WeightMismatchError, apply_delta, check_compatible, scale, sparse_combination, task_vector
from .config import LAYER_RULES, QUANTIZATION_RANGES, code_width, levels_problem

FORMAT = "robustsoup-rws/1"
STATISTICS = ("none", "selected", "all")
PROJECTED = ("weight", "norm")  # θ_e − θ₀ with the standard model's direction projected out
KINDS = (*PROJECTED, "mean", "logvar", "replace")
ADDITIVE = ("weight", "norm", "mean", "logvar")  # patched as θ + λ·δ (logvar: v·exp(λ·δ)); replace: set
QUANTIZED_KINDS = {"levels": PROJECTED, "bits": ADDITIVE}  # what each scheme quantizes; the rest stays float32
SHORTCUT_NAMES = ("downsample", "shortcut")  # module names of projection shortcuts (any case)
_TINY_VARIANCE = 1e-12  # floor before taking a log: a dead channel's variance can be 0
_CODES, _SCALE, _OFFSET = "__codes__", "__scale__", "__offset__"

StateDict = Mapping[str, torch.Tensor]


class SignatureError(ValueError):
    """A signature that is missing, damaged, or does not fit the model it is applied to."""


# --------------------------------------------------------------------------- layer selection


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


# --------------------------------------------------------------------------- extraction


def project_out(delta: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``delta − (delta·â) â`` with â = direction/‖direction‖, in float64; ``delta`` if ‖direction‖ = 0."""
    d = delta.detach().to("cpu", torch.float64)
    a = direction.detach().to("cpu", torch.float64)
    norm = a.norm()
    if norm == 0:
        return d.clone()
    unit = a / norm
    return d - (d.flatten() @ unit.flatten()) * unit


@dataclass
class SignatureMeta:
    """The sidecar of a signature file.

    ``bits`` < 32: bit codes (2^bits levels); ``levels`` > 0: packed level codes; both unset
    (32, 0): float32. ``quantization_range``: ``signature`` or ``experts`` (see the module docstring).
    """

    name: str
    corruption: str | None
    architecture: str
    model_kwargs: dict[str, Any]
    dataset: str
    num_classes: int
    layers: list[str]
    k: int | None
    norm_affine: bool
    statistics: str
    bits: int = 32
    levels: int = 0
    quantization_range: str = ""
    layer_rule: str = "ours"
    tensors: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, Any] = field(default_factory=dict)
    norms: dict[str, dict[str, float]] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    parameters: int = 0
    file_bytes: int = 0
    weights_sha256: str = ""
    created: str = ""
    format: str = FORMAT

    def identity(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "model_kwargs": self.model_kwargs}

    @property
    def scheme(self) -> str | None:
        """``levels``, ``bits`` or None (float32)."""
        return "levels" if self.levels else "bits" if self.bits != 32 else None

    def quantized_keys(self) -> list[str]:
        """The tensors stored as codes, in the sidecar's (sorted) key order."""
        if self.scheme is None:
            return []
        kinds = QUANTIZED_KINDS[self.scheme]
        return sorted(k for k, info in self.tensors.items() if info["kind"] in kinds)

    def code_levels(self) -> int:
        """Number of quantization levels (0 when not quantized)."""
        return self.levels or ((1 << self.bits) if self.bits != 32 else 0)


@dataclass
class Signature:
    """Signature values (float64, dequantized if quantized) and their sidecar.

    ``codes`` holds the integer codes (unpacked), scale and offset of each quantized tensor, so
    that saving it again writes the same bytes.
    """

    values: dict[str, torch.Tensor]
    meta: SignatureMeta
    codes: dict[str, tuple[np.ndarray, float, float]] | None = None

    @property
    def kinds(self) -> dict[str, str]:
        return {k: self.meta.tensors[k]["kind"] for k in self.values}

    @property
    def name(self) -> str:
        return self.meta.name


def extract_signature(
    init: StateDict,
    standard: StateDict,
    expert: StateDict,
    plan: LayerPlan,
    *,
    name: str,
    corruption: str | None,
    identity: Mapping[str, Any],
    sources: Mapping[str, Any] | None = None,
) -> Signature:
    """The RWS of ``expert`` against ``standard``, both fine-tuned from ``init``, over ``plan``.

    ``identity`` has the sidecar fields architecture, model_kwargs, dataset, num_classes.
    The sidecar records, per tensor, ‖RWS‖, ‖θ_e − θ₀‖, ‖θ_std − θ₀‖, ‖θ_std‖, ‖θ_e − θ_std‖ and
    cos(Δ, θ_std − θ₀) (for the per-layer figure).
    """
    keys = list(plan.tensors)
    try:
        check_compatible([init, standard, expert], ["the initialization", "the standard model", "the expert"], keys)
    except WeightMismatchError as error:
        raise SignatureError(f"cannot extract {name}: {error}") from error
    f64 = torch.float64
    projected = [k for k in keys if plan.tensors[k] in PROJECTED]
    logvar = [k for k in keys if plan.tensors[k] == "logvar"]
    delta = task_vector(expert, init, projected, f64)  # Δ = θ_e − θ₀
    move = task_vector(standard, init, projected, f64)  # θ_std − θ₀
    apart = task_vector(expert, standard, [k for k in keys if k not in logvar], f64)  # θ_e − θ_std
    log_variances = [
        {k: torch.log(model[k].detach().to(f64).clamp_min(_TINY_VARIANCE)) for k in logvar}
        for model in (expert, standard)
    ]
    log_apart = task_vector(*log_variances)  # log v_e − log v_std
    values: dict[str, torch.Tensor] = {}
    norms: dict[str, dict[str, float]] = {}
    tensors: dict[str, dict[str, Any]] = {}
    for key, kind in plan.tensors.items():
        s = standard[key].detach().to("cpu", f64)
        if kind in PROJECTED:
            value = project_out(delta[key], move[key])
            d, m = delta[key], move[key]
            cosine = float(d.flatten() @ m.flatten() / (d.norm() * m.norm())) if d.norm() > 0 and m.norm() > 0 else 0.0
            norms[key] = {
                "rws": float(value.norm()),
                "delta": float(d.norm()),
                "standard_move": float(m.norm()),
                "standard": float(s.norm()),
                "expert_minus_standard": float(apart[key].norm()),
                "cosine": cosine,
            }
        elif kind == "replace":
            value = expert[key].detach().to("cpu", f64)  # the expert's own tensor, set at patch time
            norms[key] = {
                "rws": float(value.norm()),
                "standard": float(s.norm()),
                "expert_minus_standard": float(apart[key].norm()),
            }
        else:
            value = (apart[key] if kind == "mean" else log_apart[key]).cpu()
            norms[key] = {"rws": float(value.norm()), "standard": float(s.norm())}
        values[key] = value
        tensors[key] = {"kind": kind, "shape": list(value.shape)}
    meta = SignatureMeta(
        name=name,
        corruption=corruption,
        architecture=identity["architecture"],
        model_kwargs=dict(identity["model_kwargs"]),
        dataset=identity["dataset"],
        num_classes=int(identity["num_classes"]),
        layers=list(plan.layers),
        k=plan.k,
        norm_affine=plan.norm_affine,
        statistics=plan.statistics,
        layer_rule=plan.rule,
        tensors=tensors,
        sources=dict(sources or {}),
        norms=norms,
        parameters=sum(v.numel() for v in values.values()),
    )
    return Signature(values=values, meta=meta)


# --------------------------------------------------------------------------- quantization


def code_dtype(bits: int) -> np.dtype:
    """The smallest unsigned integer type that holds 2^bits levels (uint8 up to 8 bits, else uint16)."""
    if not 1 <= bits <= 16:
        raise SignatureError(f"quantization needs 1–16 bits, got {bits}")
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def _levels(bits: int | None, levels: int | None) -> int:
    """The number of levels of ``bits`` (2^bits) or ``levels``, exactly one of them given."""
    if (bits is None) == (levels is None):
        raise SignatureError(
            f"quantize with either bits (2^bits levels, stored as uint8/uint16 codes) or levels (packed codes), "
            f"not both or neither; got bits={bits!r}, levels={levels!r}"
        )
    if bits is not None:
        code_dtype(bits)
        return 1 << bits
    problem = levels_problem(levels)
    if problem:
        raise SignatureError(problem)
    return int(levels)


def quantize_tensor(
    x: torch.Tensor,
    bits: int | None = None,
    *,
    levels: int | None = None,
    value_range: tuple[float, float] | None = None,
) -> tuple[np.ndarray, float, float]:
    """Linear quantization over [min, max] with 2^bits (or ``levels``) levels: (codes, scale, offset).

    value ≈ offset + code·scale with offset = min and scale = (max − min)/(levels − 1); the
    error is at most scale/2 (half a level). [min, max] is the tensor's own unless
    ``value_range`` gives it (e.g. over all experts; it must contain the tensor's values). A
    constant tensor gets scale 0. Codes are unsigned integers of the smallest type that holds them.
    """
    count = _levels(bits, levels)
    dtype = code_dtype(code_width(count))
    v = x.detach().to("cpu", torch.float64).flatten()
    if v.numel() == 0:
        return np.zeros(tuple(x.shape), dtype=dtype), 0.0, 0.0
    if not bool(torch.isfinite(v).all()):
        raise SignatureError("cannot quantize a tensor with non-finite values")
    lo, hi = float(v.min()), float(v.max())
    if value_range is not None:
        if not (value_range[0] <= lo and hi <= value_range[1]):
            raise SignatureError(
                f"the quantization range [{value_range[0]}, {value_range[1]}] does not contain the tensor's "
                f"values [{lo}, {hi}]; take the range over every signature quantized together"
            )
        lo, hi = float(value_range[0]), float(value_range[1])
    top = count - 1
    scale = (hi - lo) / top
    if not math.isfinite(scale):
        raise SignatureError(f"cannot quantize values over [{lo}, {hi}]: the step overflows float64")
    if scale == 0:
        return np.zeros(tuple(x.shape), dtype=dtype), 0.0, lo
    codes = torch.round((v - lo) / scale).clamp_(0, top).to(torch.int64).numpy().astype(dtype)
    return codes.reshape(tuple(x.shape)), scale, lo


def dequantize_tensor(codes: np.ndarray, scale: float, offset: float) -> torch.Tensor:
    """offset + codes·scale in float64."""
    return torch.from_numpy(codes.astype(np.float64)) * scale + offset


def pack_codes(codes: Sequence[np.ndarray], width: int) -> np.ndarray:
    """The codes of several tensors, ``width`` bits each, as one uint8 stream (most significant bit first).

    ⌈n·width/8⌉ bytes for n codes in all; :func:`unpack_codes` inverts it.
    """
    flat = np.concatenate([np.asarray(c, dtype=np.int64).reshape(-1) for c in codes]) if codes else np.zeros(0)
    flat = flat.astype(np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= 1 << width):
        raise SignatureError(f"codes outside [0, {(1 << width) - 1}] cannot be packed into {width} bits")
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    bits = ((flat[:, None] >> shifts) & 1).astype(np.uint8)
    return np.packbits(bits.reshape(-1))


def unpack_codes(stream: np.ndarray, counts: Sequence[int], width: int) -> list[np.ndarray]:
    """Split a :func:`pack_codes` stream back into flat code arrays of ``counts`` codes each."""
    total = int(sum(counts))
    expected = -(-total * width // 8)
    if stream.dtype != np.uint8 or stream.ndim != 1 or stream.size != expected:
        raise SignatureError(
            f"packed codes: expected {expected} uint8 bytes for {total} codes of {width} bits, "
            f"found {stream.size} {stream.dtype}"
        )
    bits = np.unpackbits(stream, count=total * width).reshape(total, width).astype(np.int64)
    flat = bits @ (1 << np.arange(width - 1, -1, -1, dtype=np.int64))
    dtype = code_dtype(width)
    return [part.astype(dtype) for part in np.split(flat, np.cumsum(counts)[:-1])] if counts else []


def quantize(
    signature: Signature, bits: int | None = None, name: str | None = None, *, levels: int | None = None
) -> Signature:
    """A copy of ``signature`` quantized to ``bits`` (2^bits levels) or ``levels``, [min, max] per tensor."""
    return quantize_signatures([signature], bits=bits, levels=levels, names=[name] if name else None)[0]


def quantize_signatures(
    signatures: Sequence[Signature],
    *,
    bits: int | None = None,
    levels: int | None = None,
    value_range: str = "signature",
    names: Sequence[str] | None = None,
) -> list[Signature]:
    """Copies of ``signatures`` quantized to ``bits`` (2^bits levels, uint8/uint16 codes) or ``levels``
    (packed codes of ⌈log₂ levels⌉ bits).

    ``value_range``: ``signature`` takes [min, max] per tensor of each signature; ``experts``
    per key over all ``signatures`` (the reference's ``decompose``), so that one grid serves
    every expert. Tensors the scheme does not quantize (see :data:`QUANTIZED_KINDS`) are kept
    in float32. Default names: ``<name>-<bits>bit`` / ``<name>-<levels>levels``.
    """
    count = _levels(bits, levels)
    scheme = "bits" if bits is not None else "levels"
    if value_range not in QUANTIZATION_RANGES:
        raise SignatureError(
            f"unknown quantization range {value_range!r}; expected 'signature' ([min, max] per tensor of each "
            "signature) or 'experts' (per key over all the signatures quantized together)"
        )
    if not signatures:
        raise SignatureError("no signatures to quantize")
    if names is not None and len(names) != len(signatures):
        raise SignatureError(f"{len(signatures)} signatures but {len(names)} names")
    for sig in signatures:
        if sig.meta.scheme is not None:
            raise SignatureError(f"{sig.name} is already quantized ({sig.meta.code_levels()} levels)")
    quantized_kinds = QUANTIZED_KINDS[scheme]
    ranges: dict[str, tuple[float, float]] = {}
    if value_range == "experts":
        check_same_architecture(signatures)
        _check_same_kinds(signatures)
        for sig in signatures:
            kinds = sig.kinds
            for key, value in sig.values.items():
                if kinds[key] in quantized_kinds and value.numel():
                    lo, hi = float(value.min()), float(value.max())
                    old = ranges.get(key, (lo, hi))
                    ranges[key] = (min(old[0], lo), max(old[1], hi))
    out = []
    for i, sig in enumerate(signatures):
        codes, values, kinds = {}, {}, sig.kinds
        for key, value in sig.values.items():
            if kinds[key] in quantized_kinds:
                q, step, offset = quantize_tensor(value, bits, levels=levels, value_range=ranges.get(key))
                codes[key] = (q, step, offset)
                values[key] = dequantize_tensor(q, step, offset)
            else:  # stored as float32: keep exactly what a load returns
                values[key] = value.detach().to("cpu", torch.float32).to(torch.float64)
        tag = f"{bits}bit" if bits is not None else f"{levels}levels"
        meta = SignatureMeta(
            **{
                **asdict(sig.meta),
                "bits": bits if bits is not None else 32,
                "levels": levels or 0,
                "quantization_range": value_range,
                "name": names[i] if names else f"{sig.name}-{tag}",
                "file_bytes": 0,
                "weights_sha256": "",
                "created": "",
                "provenance": {
                    **sig.meta.provenance,
                    "quantized_from": sig.name,
                    "quantization": {
                        "scheme": scheme,
                        "levels": count,
                        "code_bits": code_width(count),
                        "range": value_range,
                        "range_over": [s.name for s in signatures] if value_range == "experts" else [sig.name],
                    },
                },
            }
        )
        out.append(Signature(values=values, meta=meta, codes=codes))
    return out


# --------------------------------------------------------------------------- storage


def save_signature(path: str | Path, signature: Signature) -> Path:
    """Write the signature (``.safetensors``) and its sidecar (``.json``) atomically, weights first.

    Float tensors: float32 arrays under the tensor's key. Quantized tensors: bit codes as
    uint8/uint16 arrays under their key, or level codes packed into one ``__codes__`` uint8
    stream; two float64 vectors ``__scale__`` and ``__offset__`` with one entry per quantized
    tensor, in the sidecar's (sorted) key order (one entry each keeps the file header small).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise SignatureError(f"signature files end in .safetensors, got {path}")
    meta = signature.meta
    quantized = meta.quantized_keys()
    if quantized and (signature.codes is None or sorted(signature.codes) != quantized):
        raise SignatureError(
            f"{signature.name} is quantized ({meta.code_levels()} levels) but its codes do not cover "
            f"exactly the tensors {quantized[:3]}…; quantize it with quantize_signatures"
        )
    arrays: dict[str, np.ndarray] = {}
    for key, value in signature.values.items():
        if key not in quantized:
            arrays[key] = np.ascontiguousarray(value.detach().to("cpu", torch.float32).numpy())
    if quantized:
        codes = signature.codes
        if meta.scheme == "bits":
            for key in quantized:
                arrays[key] = np.ascontiguousarray(codes[key][0])
        else:
            arrays[_CODES] = pack_codes([codes[k][0] for k in quantized], code_width(meta.levels))
        arrays[_SCALE] = np.array([codes[k][1] for k in quantized], dtype=np.float64)
        arrays[_OFFSET] = np.array([codes[k][2] for k in quantized], dtype=np.float64)
    header = {"format": FORMAT, "name": signature.name, "bits": str(meta.bits)}
    if meta.levels:
        header["levels"] = str(meta.levels)
    with atomic_path(path) as tmp:
        save_numpy(arrays, str(tmp), metadata=header)
    meta.file_bytes = path.stat().st_size
    meta.weights_sha256 = file_sha256(path)
    meta.created = meta.created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    write_text_atomic(sidecar_path(path), json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
    return path


def load_signature(path: str | Path, expect: Mapping[str, Any] | None = None) -> Signature:
    """Read a signature, checking its sidecar, its SHA-256 and every tensor; values in float64.

    ``expect`` maps sidecar fields to required values (e.g. ``{"architecture": …}``).
    """
    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise SignatureError(f"signature {path} does not exist")
    if not side.is_file():
        raise SignatureError(
            f"signature sidecar {side} is missing; a signature is a .safetensors file plus a .json sidecar"
        )
    meta = read_sidecar(side, FORMAT, SignatureMeta, SignatureError, "signature")
    if meta.weights_sha256 and file_sha256(path) != meta.weights_sha256:
        raise SignatureError(f"signature {path} does not match its sidecar's SHA-256: truncated or replaced")
    try:
        arrays = load_numpy(str(path))
    except (SafetensorError, OSError) as exc:
        raise SignatureError(f"signature {path} is unreadable ({exc})") from exc
    unlisted = sorted(set(arrays) - set(meta.tensors) - {_CODES, _SCALE, _OFFSET})
    if unlisted:
        raise SignatureError(
            f"signature {path} holds tensors its sidecar does not list, e.g. {unlisted[:3]}: the sidecar "
            "belongs to another signature; extract both again"
        )
    quantized = meta.quantized_keys()
    codes: dict[str, tuple[np.ndarray, float, float]] | None = {} if meta.scheme else None
    packed: dict[str, np.ndarray] = {}
    if quantized:
        scales, offsets = arrays.get(_SCALE), arrays.get(_OFFSET)
        if scales is None or offsets is None or len(scales) != len(quantized) or len(offsets) != len(quantized):
            raise SignatureError(
                f"signature {path} is quantized but lacks one scale and offset per quantized tensor "
                f"({len(quantized)} expected)"
            )
        if meta.scheme == "levels":
            if _CODES not in arrays:
                raise SignatureError(f"signature {path} has {meta.levels} levels but no {_CODES} stream")
            counts = [math.prod(meta.tensors[k]["shape"]) for k in quantized]
            unpacked = unpack_codes(arrays[_CODES], counts, code_width(meta.levels))
            packed = {k: u.reshape(meta.tensors[k]["shape"]) for k, u in zip(quantized, unpacked)}
    index = {key: i for i, key in enumerate(quantized)}
    values: dict[str, torch.Tensor] = {}
    for key, info in meta.tensors.items():
        array = packed[key] if key in packed else arrays.get(key)
        if array is None:
            raise SignatureError(f"signature {path} lacks tensor {key!r} that its sidecar lists")
        if list(array.shape) != list(info["shape"]):
            raise SignatureError(
                f"signature {path}: {key!r} has shape {list(array.shape)}, sidecar says {info['shape']}"
            )
        if key in index:
            expected = code_dtype(code_width(meta.code_levels()))
            if array.dtype != expected or (array.size and int(array.max()) >= meta.code_levels()):
                raise SignatureError(
                    f"signature {path}: {key!r} holds {array.dtype} codes up to {array.max() if array.size else 0}, "
                    f"expected {expected} codes below {meta.code_levels()} levels"
                )
            scale_, offset = float(scales[index[key]]), float(offsets[index[key]])
            codes[key] = (array, scale_, offset)
            values[key] = dequantize_tensor(array, scale_, offset)
        else:
            if array.dtype != np.float32:
                raise SignatureError(f"signature {path}: {key!r} is {array.dtype}, expected float32")
            values[key] = torch.from_numpy(array.astype(np.float64))
    for key, wanted in (expect or {}).items():
        found = getattr(meta, key)
        if found != wanted:
            raise SignatureError(f"signature {path}: expected {key} {wanted!r}, found {found!r}")
    return Signature(values=values, meta=meta, codes=codes)


def storage_bytes(path: str | Path, sidecar: bool = False) -> int:
    """Bytes of a weights file on disk (a checkpoint's or a signature's), optionally with its .json."""
    path = Path(path)
    size = path.stat().st_size
    return size + (path.with_suffix(".json").stat().st_size if sidecar else 0)


# --------------------------------------------------------------------------- algebra (through robustsoup.weights)


def _check_same_kinds(signatures: Sequence[Signature]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for sig in signatures:
        for key, kind in sig.kinds.items():
            if kinds.setdefault(key, kind) != kind:
                raise SignatureError(
                    f"{key!r} is a {kinds[key]} tensor in one signature and a {kind} one in {sig.name}"
                )
    return kinds


def _split(signature: Signature) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(additive deltas, replacement values) of a signature."""
    kinds = signature.kinds
    additive = {k: v for k, v in signature.values.items() if kinds[k] != "replace"}
    return additive, {k: v for k, v in signature.values.items() if kinds[k] == "replace"}


def _combined(signatures: Sequence[Signature], coefficients: Sequence[float]) -> dict[str, torch.Tensor]:
    """Σ λᵢ RWSᵢ over the additive tensors (float64, in order) and the mean of the replaced ones."""
    parts = [_split(sig) for sig in signatures]
    total = sparse_combination([additive for additive, _ in parts], coefficients)
    replaced = [replace for _, replace in parts if replace]
    if replaced:
        total.update(sparse_combination(replaced, [1.0] * len(replaced), mean=True))
    return total


def rescale(signature: Signature, factor: float, name: str | None = None) -> Signature:
    """λ·RWS as a signature of its own (float64 values, stored as float32 if saved); replaced
    tensors are not scaled."""
    additive, replace = _split(signature)
    values = {**scale(additive, float(factor)), **{k: v.clone() for k, v in replace.items()}}
    meta = SignatureMeta(
        **{
            **asdict(signature.meta),
            "bits": 32,
            "levels": 0,
            "quantization_range": "",
            "name": name or f"{signature.name}-x{factor:g}",
            "file_bytes": 0,
            "weights_sha256": "",
            "created": "",
            "provenance": {"rescaled": {signature.name: float(factor)}},
        }
    )
    return Signature(values={k: values[k] for k in signature.values}, meta=meta)


def compose(signatures: Sequence[Signature], coefficients: Sequence[float], name: str = "composed") -> Signature:
    """Σ λᵢ RWSᵢ as one signature over the union of their tensors (replaced tensors: their mean).

    Summed in float64 in the order given, exactly as :func:`patched_state` sums them, so
    patching with the composition (λ = 1) equals patching with the list, bit for bit.
    """
    if len(signatures) != len(coefficients) or not signatures:
        raise SignatureError(f"{len(signatures)} signatures but {len(coefficients)} coefficients")
    check_same_architecture(signatures)
    kinds = _check_same_kinds(signatures)
    total = _combined(signatures, coefficients)
    first = signatures[0].meta
    tensors = {k: {"kind": kinds[k], "shape": list(v.shape)} for k, v in total.items()}
    layers = list(dict.fromkeys(layer for sig in signatures for layer in sig.meta.layers))
    meta = SignatureMeta(
        name=name,
        corruption=None,
        architecture=first.architecture,
        model_kwargs=first.model_kwargs,
        dataset=first.dataset,
        num_classes=first.num_classes,
        layers=layers,
        k=None if any(s.meta.k is None for s in signatures) else max(s.meta.k for s in signatures),
        norm_affine=any(s.meta.norm_affine for s in signatures),
        statistics=first.statistics,
        layer_rule=first.layer_rule,
        tensors=tensors,
        provenance={"composed": [{"name": s.name, "coefficient": float(c)} for s, c in zip(signatures, coefficients)]},
        parameters=sum(v.numel() for v in total.values()),
    )
    return Signature(values=total, meta=meta)


def check_same_architecture(signatures: Sequence[Signature]) -> None:
    """Signatures combined together must come from one architecture (model identity)."""
    first = signatures[0].meta
    for sig in signatures[1:]:
        if sig.meta.identity() != first.identity():
            raise SignatureError(
                f"{sig.name} is for a {sig.meta.architecture} {sig.meta.model_kwargs}, "
                f"{first.name} for a {first.architecture} {first.model_kwargs}"
            )


def check_applicable(base: StateDict, signature: Signature, identity: Mapping[str, Any] | None = None) -> None:
    """Raise :class:`SignatureError` unless ``signature`` fits ``base`` (keys, shapes, floating dtypes).

    ``identity`` (architecture, model_kwargs) of the base model, when known, must match the
    signature's: a signature transfers across data sets and seeds, not architectures.
    """
    meta = signature.meta
    where = (
        f"signature {meta.name} (layers {', '.join(meta.layers[:3])}{'…' if len(meta.layers) > 3 else ''} "
        f"of a {meta.architecture} {meta.model_kwargs})"
    )
    if identity is not None:
        wanted = {"architecture": identity["architecture"], "model_kwargs": dict(identity["model_kwargs"])}
        if wanted != meta.identity():
            raise SignatureError(f"{where} does not fit a {wanted['architecture']} {wanted['model_kwargs']}")
    for key, value in signature.values.items():
        if key not in base:
            raise SignatureError(f"{where}: the model has no tensor {key!r}; it is another architecture")
        if tuple(base[key].shape) != tuple(value.shape):
            raise SignatureError(
                f"{where}: {key!r} has shape {tuple(value.shape)} in the signature, "
                f"{tuple(base[key].shape)} in the model; it is another architecture"
            )
        if not torch.is_floating_point(base[key]):
            raise SignatureError(f"{where}: {key!r} is an integer tensor in the model")


def _patched_tensors(
    base: StateDict, signatures: Sequence[Signature], coefficients: Sequence[float], identity: Mapping[str, Any] | None
) -> dict[str, torch.Tensor]:
    if len(signatures) != len(coefficients):
        raise SignatureError(f"{len(signatures)} signatures but {len(coefficients)} coefficients")
    for sig in signatures:
        check_applicable(base, sig, identity)
    kinds = _check_same_kinds(signatures)
    total = _combined(signatures, coefficients)
    additive = {k: v for k, v in total.items() if kinds[k] != "replace"}
    out = apply_delta(base, additive, log_scale={k for k in additive if kinds[k] == "logvar"})
    for key, value in total.items():
        if kinds[key] == "replace":
            out[key] = value.to(base[key].dtype).to(base[key].device)
    return {key: out[key] for key in total}


def patched_state(
    base: StateDict,
    signatures: Sequence[Signature],
    coefficients: Sequence[float],
    identity: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """θ = θ_base + Σ λᵢ RWSᵢ as a new state dict; ``base`` is left untouched.

    The deltas are summed in float64 and added once, then cast to each tensor's dtype; running
    variances are multiplied by exp(Σ λᵢ δᵢ); replaced tensors (rule ``reference``) are set to
    the mean of the signatures' values, whatever λ. Untouched entries are the base's tensors
    (shared, not copied), so the base itself is the exact unpatched model.
    """
    new = _patched_tensors(base, signatures, coefficients, identity)
    return {key: new.get(key, value) for key, value in base.items()}


@dataclass
class Patch:
    """A patch applied in place: exact copies of the tensors it replaced."""

    originals: dict[str, torch.Tensor]
    signatures: list[str]
    coefficients: list[float]
    _targets: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    removed: bool = False

    @torch.no_grad()
    def remove(self) -> None:
        """Restore every patched tensor bit for bit (copies back; never subtracts)."""
        if self.removed:
            return
        for key, original in self.originals.items():
            self._targets[key].copy_(original)
        self.removed = True


@torch.no_grad()
def apply_signatures(
    model: torch.nn.Module,
    signatures: Sequence[Signature],
    coefficients: Sequence[float],
    identity: Mapping[str, Any] | None = None,
) -> Patch:
    """Patch ``model`` in place with θ + Σ λᵢ RWSᵢ; ``Patch.remove()`` restores it exactly."""
    state = model.state_dict(keep_vars=True)
    plain = {k: v.detach() for k, v in state.items()}
    new = _patched_tensors(plain, signatures, coefficients, identity)
    originals, targets = {}, {}
    for key, value in new.items():
        target = plain[key]
        originals[key] = target.clone()
        targets[key] = target
        target.copy_(value)
    return Patch(
        originals=originals,
        signatures=[s.name for s in signatures],
        coefficients=[float(c) for c in coefficients],
        _targets=targets,
    )


@contextlib.contextmanager
def patched(
    model: torch.nn.Module,
    signatures: Sequence[Signature],
    coefficients: Sequence[float],
    identity: Mapping[str, Any] | None = None,
) -> Iterator[Patch]:
    """``with patched(model, [sig], [λ]): …`` — the model is exactly restored on exit."""
    patch = apply_signatures(model, signatures, coefficients, identity)
    try:
        yield patch
    finally:
        patch.remove()


def state_digest(state: StateDict) -> str:
    """SHA-256 over keys, dtypes, shapes and raw bytes of a state dict (sorted keys): equal iff bitwise equal."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


# --------------------------------------------------------------------------- checkpoints (CLI)


def unpatch_companion(path: str | Path) -> Path:
    """``out.safetensors`` → ``out.unpatch.safetensors`` (the original tensors a patch replaced)."""
    path = Path(path)
    return path.with_name(path.stem + ".unpatch.safetensors")


OTHER_BASE_ADVICE = (
    "A signature lives in the basin of the model it was extracted against: the project's transfer table "
    "(tables/rws_transfer.md) finds that signatures move to a standard model fine-tuned from the same "
    "initialization but lower accuracy on one with its own initialization."
)


def other_base_problems(meta, signatures: Sequence[Signature]) -> list[str]:
    """One sentence per signature whose recorded standard model is not ``meta``'s (the checkpoint being patched,
    or, for an already patched one, the model it was patched from); empty when every one matches. A signature
    that records no standard model (extracted outside the workflow without ``sources``) cannot be checked."""
    patched_from = meta.provenance.get("rws_patch", {}).get("base_weights_sha256")
    bases = {meta.weights_sha256, patched_from} - {None, ""}
    problems = []
    for signature in signatures:
        standard = signature.meta.sources.get("standard", {})
        recorded = standard.get("weights_sha256")
        if recorded and recorded not in bases:
            problems.append(
                f"signature {signature.name} was extracted against {standard.get('name', '?')} "
                f"(SHA-256 {recorded[:12]}…), not against {meta.name} ({meta.weights_sha256[:12]}…)"
            )
    return problems


def patch_checkpoint(
    model_path: str | Path,
    specs: Sequence[tuple[str | Path, float]],
    out_path: str | Path,
    allow_other_base: bool = False,
    warn: Callable[[str], None] | None = None,
) -> Path:
    """``robustsoup patch MODEL --rws a.safetensors:0.8 … -o OUT``: write the patched checkpoint.

    Beside it, ``OUT.unpatch.safetensors`` keeps exact copies of the replaced tensors, and the
    sidecar's provenance records the base model, its content digest and every (signature, λ).
    A signature extracted against another standard model (:func:`other_base_problems`) is refused
    unless ``allow_other_base``; then each problem goes to ``warn`` with the transfer advice.
    """
    from ..checkpoint import load_checkpoint, save_checkpoint

    state, meta = load_checkpoint(model_path)
    signatures = [load_signature(path) for path, _ in specs]
    problems = other_base_problems(meta, signatures)
    if problems and not allow_other_base:
        raise SignatureError(
            "; ".join(problems) + f". {OTHER_BASE_ADVICE} Patch the model the signature was extracted against, "
            "or pass --allow-other-base to apply it anyway."
        )
    for problem in problems if warn is not None else ():
        warn(f"{problem}. {OTHER_BASE_ADVICE}")
    coefficients = [float(c) for _, c in specs]
    identity = {"architecture": meta.architecture, "model_kwargs": meta.model_kwargs}
    new = patched_state(state, signatures, coefficients, identity)
    touched = sorted({k for sig in signatures for k in sig.values})
    out_path = Path(out_path)
    with atomic_path(unpatch_companion(out_path)) as tmp:
        save_torch({k: state[k].contiguous() for k in touched}, str(tmp), metadata={"format": FORMAT + "+originals"})
    meta.provenance = {
        **meta.provenance,
        "rws_patch": {
            "base": meta.name,
            "base_weights_sha256": meta.weights_sha256,
            "base_digest": state_digest(state),
            "signatures": [
                {"path": str(p), "name": s.name, "sha256": s.meta.weights_sha256, "coefficient": c}
                for (p, _), s, c in zip(specs, signatures, coefficients)
            ],
            "originals": unpatch_companion(out_path).name,
        },
    }
    meta.name, meta.weights_sha256, meta.created, meta.git_commit = out_path.stem, "", "", ""
    return save_checkpoint(out_path, new, meta)


def unpatch_checkpoint(patched_path: str | Path, out_path: str | Path) -> Path:
    """``robustsoup unpatch PATCHED -o OUT``: restore the base checkpoint bit for bit.

    Fails if the companion file is missing or the restored tensors do not hash to the digest
    recorded at patch time.
    """
    from ..checkpoint import load_checkpoint, save_checkpoint

    state, meta = load_checkpoint(patched_path)
    record = meta.provenance.get("rws_patch")
    if not record:
        raise SignatureError(f"{patched_path} is not a patched checkpoint (no rws_patch in its sidecar provenance)")
    companion = unpatch_companion(patched_path)
    if not companion.is_file():
        raise SignatureError(f"{companion} is missing: it holds the original tensors needed to unpatch exactly")
    originals = load_torch(str(companion))
    restored = {k: originals.get(k, v) for k, v in state.items()}
    if state_digest(restored) != record["base_digest"]:
        raise SignatureError(
            f"unpatching {patched_path} did not reproduce the base model {record['base']} "
            "(its companion file belongs to another patch)"
        )
    meta.provenance = {k: v for k, v in meta.provenance.items() if k != "rws_patch"}
    meta.name, meta.weights_sha256, meta.created, meta.git_commit = record["base"], "", "", ""
    return save_checkpoint(out_path, restored, meta)


__all__ = [
    "FORMAT",
    "KINDS",
    "STATISTICS",
    "LayerPlan",
    "Patch",
    "Signature",
    "SignatureError",
    "SignatureMeta",
    "apply_signatures",
    "batchnorm_layers",
    "check_applicable",
    "check_same_architecture",
    "code_dtype",
    "compose",
    "dequantize_tensor",
    "extract_signature",
    "load_signature",
    "pack_codes",
    "patch_checkpoint",
    "patched",
    "patched_state",
    "plan_layers",
    "project_out",
    "quantize",
    "quantize_signatures",
    "quantize_tensor",
    "reference_layers",
    "rescale",
    "residual_unit",
    "save_signature",
    "sidecar_path",
    "state_digest",
    "storage_bytes",
    "unpack_codes",
    "unpatch_checkpoint",
    "unpatch_companion",
    "weight_layers",
]
