"""Robust Weight Signatures (Cai et al. 2023): robustness to a corruption as a small weight patch.

Given a shared initialization θ₀, a standard model θ_std and a corruption expert θ_e, both
fine-tuned from θ₀, the signature of the expert is, per tensor,

    Δ = θ_e − θ₀,   â = (θ_std − θ₀) / ‖θ_std − θ₀‖,   RWS = Δ − (Δ·â) â

(the part of the expert's move orthogonal to the standard model's move; a tensor the standard
model did not move keeps RWS = Δ). Patching is θ = θ_std + Σ λᵢ RWSᵢ, λ used once (the reference
code multiplies by λ twice). Every delta goes through :mod:`robustsoup.weights` (task vectors,
:func:`~robustsoup.weights.sparse_combination`, :func:`~robustsoup.weights.apply_delta`).

This module is the signature itself: its values and sidecar (:class:`Signature`,
:class:`SignatureMeta`), the kinds of its tensors, its error, and the algebra over signatures
(:func:`compose`, :func:`rescale`). The rest of the study's mechanism, by concern:

- :mod:`.layers`: which tensors a signature covers (the layer rules ``ours`` and ``reference``);
- :mod:`.extract`: the projection and the extraction of a signature;
- :mod:`.quantize`: linear quantization over [min, max] (levels or bits);
- :mod:`.signature_file`: the ``.safetensors`` file and its JSON sidecar;
- :mod:`.patching`: patching a state dict, a live model (exactly undone) or a checkpoint.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..weights import scale, sparse_combination

FORMAT = "robustsoup-rws/1"
PROJECTED = ("weight", "norm")  # θ_e − θ₀ with the standard model's direction projected out
KINDS = (*PROJECTED, "mean", "logvar", "replace")
ADDITIVE = ("weight", "norm", "mean", "logvar")  # patched as θ + λ·δ (logvar: v·exp(λ·δ)); replace: set
QUANTIZED_KINDS = {"levels": PROJECTED, "bits": ADDITIVE}  # what each scheme quantizes; the rest stays float32

StateDict = Mapping[str, torch.Tensor]


class SignatureError(ValueError):
    """A signature that is missing, damaged, or does not fit the model it is applied to."""


@dataclass
class SignatureMeta:
    """The sidecar of a signature file.

    ``bits`` < 32: bit codes (2^bits levels); ``levels`` > 0: packed level codes; both unset
    (32, 0): float32. ``quantization_range``: ``signature`` or ``experts`` (see :mod:`.quantize`).
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


# --------------------------------------------------------------------------- algebra (through robustsoup.weights)


def check_same_kinds(signatures: Sequence[Signature]) -> dict[str, str]:
    """The kind of every tensor of ``signatures``; a key of two kinds is a :class:`SignatureError`."""
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


def combined_values(signatures: Sequence[Signature], coefficients: Sequence[float]) -> dict[str, torch.Tensor]:
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
    kinds = check_same_kinds(signatures)
    total = combined_values(signatures, coefficients)
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


__all__ = [
    "ADDITIVE",
    "FORMAT",
    "KINDS",
    "PROJECTED",
    "QUANTIZED_KINDS",
    "Signature",
    "SignatureError",
    "SignatureMeta",
    "StateDict",
    "check_same_architecture",
    "check_same_kinds",
    "combined_values",
    "compose",
    "rescale",
]
