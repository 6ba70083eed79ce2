"""Robust Weight Signatures (Cai et al. 2023): robustness to a corruption as a small weight patch.

Given a shared initialization θ₀, a standard model θ_std and a corruption expert θ_e, both
fine-tuned from θ₀, the signature of the expert is, per tensor,

    Δ = θ_e − θ₀,   â = (θ_std − θ₀) / ‖θ_std − θ₀‖,   RWS = Δ − (Δ·â) â

(the part of the expert's move orthogonal to the standard model's move; a tensor the standard
model did not move keeps RWS = Δ). Patching is θ = θ_std + Σ λᵢ RWSᵢ, λ used once (the reference
code multiplies by λ twice).

Which tensors (:func:`plan_layers`)
    A *weight layer* is a module whose ``weight`` has two or more dimensions (convolution, linear).
    A signature keeps the first ``k`` weight layers in network order — the order of the state
    dict, i.e. of module registration — with their biases (``k=None``: every layer). The *prefix*
    of the network is every key before the (k+1)-th weight layer. Normalization layers are
    handled as configured:

    - ``norm_affine=True``: the 1-D ``weight``/``bias`` of normalization layers in the prefix
      (BatchNorm, LayerNorm, GroupNorm) are signature tensors like any weight (the reference does
      this for ResNet-50; for VGG it leaves BatchNorm alone);
    - ``statistics``: BatchNorm running statistics are *data* statistics, not fitted weights, so
      they are never projected. Their signature is the expert's statistics relative to the
      standard model's: ``μ_e − μ_std`` for running means and ``log v_e − log v_std`` for running
      variances, patched as μ + λ·δ and v · exp(λ·δ) (variances stay positive for every λ, and
      λ = 1 on the standard model gives the expert's statistics exactly). ``"none"`` keeps the
      standard model's statistics, ``"selected"`` patches the BatchNorms of the prefix, ``"all"``
      every BatchNorm (2 numbers per channel: a few KB). On the digits default, the patched model
      is only as good as its statistics: weights patched onto the standard model's statistics do
      not help (the reference re-estimates statistics on corrupted training data for ResNet-50;
      the signature carries them instead, so patching needs no data).

    ``num_batches_tracked`` and other integer buffers are never touched.

Storage
    One ``.safetensors`` file (numpy arrays, no pickle) plus a JSON sidecar (what the signature
    is, from which checkpoints, per-tensor norms, the file's SHA-256 and size). Unquantized
    signatures are float32; quantized ones (:func:`quantize`) hold per tensor uint8 or uint16 codes
    ``q`` plus one float64 ``scale`` and ``offset`` (two vectors over the tensors), value =
    offset + q·scale: linear over [min, max] with 2^bits levels, error at most half a level. The
    reference's ``linear_quant`` takes a number of levels; here ``bits`` means 2^bits levels.
    Sizes are the files' byte counts.

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
from collections.abc import Iterator, Mapping, Sequence
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

FORMAT = "robustsoup-rws/1"
STATISTICS = ("none", "selected", "all")
KINDS = ("weight", "norm", "mean", "logvar")
_TINY_VARIANCE = 1e-12  # floor before taking a log: a dead channel's variance can be 0

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


@dataclass
class LayerPlan:
    """What a signature covers: the selected weight layers and every tensor with its kind.

    Kinds: ``weight`` (weights and biases of weight layers), ``norm`` (affine parameters of
    normalization layers), ``mean`` / ``logvar`` (BatchNorm running statistics).
    """

    layers: list[str]
    tensors: dict[str, str]
    k: int | None
    norm_affine: bool
    statistics: str


def plan_layers(state: StateDict, k: int | None = 5, norm_affine: bool = True, statistics: str = "all") -> LayerPlan:
    """The tensors of a signature over the first ``k`` weight layers (``None``: all of them).

    See the module docstring for the rules. Raises :class:`SignatureError` if the state dict
    has no weight layer, ``k`` < 1 or ``statistics`` is unknown.
    """
    if statistics not in STATISTICS:
        raise SignatureError(f"unknown BatchNorm statistics mode {statistics!r}; expected one of {STATISTICS}")
    layers = weight_layers(state)
    if not layers:
        raise SignatureError("the state dict has no weight layer (no floating 'weight' with ≥ 2 dimensions)")
    if k is not None and k < 1:
        raise SignatureError(f"a signature needs at least one layer, got k={k}")
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
    """The sidecar of a signature file."""

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


@dataclass
class Signature:
    """Signature values (float64, dequantized if quantized) and their sidecar.

    ``codes`` holds the stored integer codes, scales and offsets of a quantized signature, so
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
    for label, state in (("standard", standard), ("expert", expert)):
        missing = [k for k in plan.tensors if k not in state or k not in init]
        if missing:
            raise SignatureError(f"the {label} model or the initialization lacks {missing[:3]}: other architecture")
        bad = [k for k in plan.tensors if state[k].shape != init[k].shape]
        if bad:
            raise SignatureError(
                f"{label} key {bad[0]!r} has shape {tuple(state[bad[0]].shape)}, the initialization "
                f"{tuple(init[bad[0]].shape)}: other architecture"
            )
    values: dict[str, torch.Tensor] = {}
    norms: dict[str, dict[str, float]] = {}
    tensors: dict[str, dict[str, Any]] = {}
    for key, kind in plan.tensors.items():
        e, s, z = (t[key].detach().to("cpu", torch.float64) for t in (expert, standard, init))
        if kind in ("weight", "norm"):
            delta, move = e - z, s - z
            value = project_out(delta, move)
            cosine = (
                float(delta.flatten() @ move.flatten() / (delta.norm() * move.norm()))
                if delta.norm() > 0 and move.norm() > 0
                else 0.0
            )
            norms[key] = {
                "rws": float(value.norm()),
                "delta": float(delta.norm()),
                "standard_move": float(move.norm()),
                "standard": float(s.norm()),
                "expert_minus_standard": float((e - s).norm()),
                "cosine": cosine,
            }
        elif kind == "mean":
            value = e - s
            norms[key] = {"rws": float(value.norm()), "standard": float(s.norm())}
        else:
            value = torch.log(e.clamp_min(_TINY_VARIANCE)) - torch.log(s.clamp_min(_TINY_VARIANCE))
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


def quantize_tensor(x: torch.Tensor, bits: int) -> tuple[np.ndarray, float, float]:
    """Linear quantization over [min, max] with 2^bits levels: (codes, scale, offset).

    value ≈ offset + code·scale with offset = min and scale = (max − min)/(2^bits − 1); the
    error is at most scale/2 (half a level). A constant tensor gets scale 0.
    """
    dtype = code_dtype(bits)
    v = x.detach().to("cpu", torch.float64).flatten()
    if v.numel() == 0:
        return np.zeros(tuple(x.shape), dtype=dtype), 0.0, 0.0
    lo, hi = float(v.min()), float(v.max())
    levels = (1 << bits) - 1
    scale = (hi - lo) / levels
    if scale == 0 or not math.isfinite(scale):
        if not math.isfinite(scale):
            raise SignatureError("cannot quantize a tensor with non-finite values")
        return np.zeros(tuple(x.shape), dtype=dtype), 0.0, lo
    codes = torch.round((v - lo) / scale).clamp_(0, levels).to(torch.int64).numpy().astype(dtype)
    return codes.reshape(tuple(x.shape)), scale, lo


def dequantize_tensor(codes: np.ndarray, scale: float, offset: float) -> torch.Tensor:
    """offset + codes·scale in float64."""
    return torch.from_numpy(codes.astype(np.float64)) * scale + offset


def quantize(signature: Signature, bits: int, name: str | None = None) -> Signature:
    """A copy of ``signature`` quantized per tensor to ``bits`` (2^bits levels over [min, max])."""
    if signature.meta.bits != 32:
        raise SignatureError(f"{signature.name} is already quantized to {signature.meta.bits} bits")
    codes, values = {}, {}
    for key, value in signature.values.items():
        q, scale, offset = quantize_tensor(value, bits)
        codes[key] = (q, scale, offset)
        values[key] = dequantize_tensor(q, scale, offset)
    meta = SignatureMeta(
        **{
            **asdict(signature.meta),
            "bits": bits,
            "name": name or f"{signature.name}-{bits}bit",
            "file_bytes": 0,
            "weights_sha256": "",
            "created": "",
            "provenance": {**signature.meta.provenance, "quantized_from": signature.name},
        }
    )
    return Signature(values=values, meta=meta, codes=codes)


# --------------------------------------------------------------------------- storage


def save_signature(path: str | Path, signature: Signature) -> Path:
    """Write the signature (``.safetensors``) and its sidecar (``.json``) atomically, weights first.

    Unquantized: float32 arrays under the tensor's key. Quantized: ``<key>`` uint8/uint16 codes,
    and two float64 vectors ``__scale__`` and ``__offset__`` with one entry per tensor, in the
    order of the sidecar's ``tensors`` (one entry each keeps the file header small).
    """
    path = Path(path)
    if path.suffix != ".safetensors":
        raise SignatureError(f"signature files end in .safetensors, got {path}")
    arrays: dict[str, np.ndarray] = {}
    if signature.meta.bits == 32:
        for key, value in signature.values.items():
            arrays[key] = np.ascontiguousarray(value.detach().to("cpu", torch.float32).numpy())
    else:
        if signature.codes is None:
            raise SignatureError(f"{signature.name} says {signature.meta.bits} bits but holds no codes")
        order = list(signature.meta.tensors)
        if sorted(order) != sorted(signature.codes):
            raise SignatureError(f"{signature.name}: codes and sidecar list other tensors")
        for key in order:
            arrays[key] = np.ascontiguousarray(signature.codes[key][0])
        arrays["__scale__"] = np.array([signature.codes[k][1] for k in order], dtype=np.float64)
        arrays["__offset__"] = np.array([signature.codes[k][2] for k in order], dtype=np.float64)
    with atomic_path(path) as tmp:
        save_numpy(
            arrays, str(tmp), metadata={"format": FORMAT, "name": signature.name, "bits": str(signature.meta.bits)}
        )
    meta = signature.meta
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
    values: dict[str, torch.Tensor] = {}
    codes: dict[str, tuple[np.ndarray, float, float]] | None = {} if meta.bits != 32 else None
    if codes is not None:
        scales, offsets = arrays.get("__scale__"), arrays.get("__offset__")
        if scales is None or offsets is None or len(scales) != len(meta.tensors) or len(offsets) != len(meta.tensors):
            raise SignatureError(f"signature {path} is quantized but lacks one scale and offset per tensor")
    for i, (key, info) in enumerate(meta.tensors.items()):
        if key not in arrays:
            raise SignatureError(f"signature {path} lacks tensor {key!r} that its sidecar lists")
        array = arrays[key]
        if list(array.shape) != list(info["shape"]):
            raise SignatureError(
                f"signature {path}: {key!r} has shape {list(array.shape)}, sidecar says {info['shape']}"
            )
        expected = np.dtype(np.float32) if meta.bits == 32 else code_dtype(meta.bits)
        if array.dtype != expected:
            raise SignatureError(
                f"signature {path}: {key!r} is {array.dtype}, expected {expected} for {meta.bits} bits"
            )
        if meta.bits == 32:
            values[key] = torch.from_numpy(array.astype(np.float64))
        else:
            scale, offset = float(scales[i]), float(offsets[i])
            codes[key] = (array, scale, offset)
            values[key] = dequantize_tensor(array, scale, offset)
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


# --------------------------------------------------------------------------- algebra


def _check_same_kinds(signatures: Sequence[Signature]) -> dict[str, str]:
    kinds: dict[str, str] = {}
    for sig in signatures:
        for key, kind in sig.kinds.items():
            if kinds.setdefault(key, kind) != kind:
                raise SignatureError(
                    f"{key!r} is a {kinds[key]} tensor in one signature and a {kind} one in {sig.name}"
                )
    return kinds


def rescale(signature: Signature, factor: float, name: str | None = None) -> Signature:
    """λ·RWS as a signature of its own (float64 values, stored as float32 if saved)."""
    meta = SignatureMeta(
        **{
            **asdict(signature.meta),
            "bits": 32,
            "name": name or f"{signature.name}-x{factor:g}",
            "file_bytes": 0,
            "weights_sha256": "",
            "created": "",
            "provenance": {"rescaled": {signature.name: float(factor)}},
        }
    )
    return Signature(values={k: v * float(factor) for k, v in signature.values.items()}, meta=meta)


def compose(signatures: Sequence[Signature], coefficients: Sequence[float], name: str = "composed") -> Signature:
    """Σ λᵢ RWSᵢ as one signature over the union of their tensors.

    Summed in float64 in the order given, exactly as :func:`patched_state` sums them, so
    patching with the composition (λ = 1) equals patching with the list, bit for bit.
    """
    if len(signatures) != len(coefficients) or not signatures:
        raise SignatureError(f"{len(signatures)} signatures but {len(coefficients)} coefficients")
    check_compatible(signatures)
    kinds = _check_same_kinds(signatures)
    total = _sum_deltas(signatures, coefficients)
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
        tensors=tensors,
        provenance={"composed": [{"name": s.name, "coefficient": float(c)} for s, c in zip(signatures, coefficients)]},
        parameters=sum(v.numel() for v in total.values()),
    )
    return Signature(values=total, meta=meta)


def check_compatible(signatures: Sequence[Signature]) -> None:
    """Signatures combined together must come from one architecture."""
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


def _sum_deltas(signatures: Sequence[Signature], coefficients: Sequence[float]) -> dict[str, torch.Tensor]:
    total: dict[str, torch.Tensor] = {}
    for sig, coefficient in zip(signatures, coefficients):
        for key, value in sig.values.items():
            term = float(coefficient) * value.to(torch.float64)
            total[key] = total[key] + term if key in total else term
    return total


def _patched_tensors(
    base: StateDict, signatures: Sequence[Signature], coefficients: Sequence[float], identity: Mapping[str, Any] | None
) -> dict[str, torch.Tensor]:
    if len(signatures) != len(coefficients):
        raise SignatureError(f"{len(signatures)} signatures but {len(coefficients)} coefficients")
    for sig in signatures:
        check_applicable(base, sig, identity)
    kinds = _check_same_kinds(signatures)
    out = {}
    for key, delta in _sum_deltas(signatures, coefficients).items():
        original = base[key]
        value = original.detach().to("cpu", torch.float64)
        value = value * torch.exp(delta) if kinds[key] == "logvar" else value + delta
        out[key] = value.to(original.dtype).to(original.device)
    return out


def patched_state(
    base: StateDict,
    signatures: Sequence[Signature],
    coefficients: Sequence[float],
    identity: Mapping[str, Any] | None = None,
) -> dict[str, torch.Tensor]:
    """θ = θ_base + Σ λᵢ RWSᵢ as a new state dict; ``base`` is left untouched.

    The deltas are summed in float64 and added once, then cast to each tensor's dtype; running
    variances are multiplied by exp(Σ λᵢ δᵢ). Untouched entries are the base's tensors (shared,
    not copied), so the base itself is the exact unpatched model.
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


def patch_checkpoint(model_path: str | Path, specs: Sequence[tuple[str | Path, float]], out_path: str | Path) -> Path:
    """``robustsoup patch MODEL --rws a.safetensors:0.8 … -o OUT``: write the patched checkpoint.

    Beside it, ``OUT.unpatch.safetensors`` keeps exact copies of the replaced tensors, and the
    sidecar's provenance records the base model, its content digest and every (signature, λ).
    """
    from ..checkpoint import load_checkpoint, save_checkpoint

    state, meta = load_checkpoint(model_path)
    signatures = [load_signature(path) for path, _ in specs]
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
    "check_compatible",
    "code_dtype",
    "compose",
    "dequantize_tensor",
    "extract_signature",
    "load_signature",
    "patch_checkpoint",
    "patched",
    "patched_state",
    "plan_layers",
    "project_out",
    "quantize",
    "quantize_tensor",
    "rescale",
    "save_signature",
    "sidecar_path",
    "state_digest",
    "storage_bytes",
    "unpatch_checkpoint",
    "unpatch_companion",
    "weight_layers",
]
