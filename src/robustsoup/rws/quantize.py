"""Quantizing Robust Weight Signatures (:func:`quantize_signatures`).

Linear quantization
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
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch

from .config import QUANTIZATION_RANGES, code_width, levels_problem
from .signatures import (
    QUANTIZED_KINDS,
    Signature,
    SignatureError,
    SignatureMeta,
    check_same_architecture,
    check_same_kinds,
)


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
        check_same_kinds(signatures)
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


__all__ = [
    "code_dtype",
    "dequantize_tensor",
    "pack_codes",
    "quantize",
    "quantize_signatures",
    "quantize_tensor",
    "unpack_codes",
]
