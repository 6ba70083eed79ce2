"""The file format of a Robust Weight Signature: :func:`save_signature`, :func:`load_signature`.

Storage
    One ``.safetensors`` file (numpy arrays, no pickle) plus a JSON sidecar (what the signature
    is, from which checkpoints, per-tensor norms, the file's SHA-256 and size). Float tensors
    are stored as float32 under their key; bit codes under their key; packed level codes in one
    ``__codes__`` stream; ``__scale__`` and ``__offset__`` hold one entry per quantized tensor,
    in the sidecar's (sorted) key order. Sizes are the files' byte counts.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from ..checkpoint import file_sha256, read_sidecar, sidecar_path
from ..io import atomic_path, write_text_atomic
from .config import code_width
from .quantize import code_dtype, dequantize_tensor, pack_codes, unpack_codes
from .signatures import FORMAT, Signature, SignatureError, SignatureMeta

_CODES, _SCALE, _OFFSET = "__codes__", "__scale__", "__offset__"


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
        raise SignatureError(
            f"signature {path} does not exist; give the path of a signature file (.safetensors with its .json "
            "sidecar, as extract_rws or quantize_rws write them)"
        )
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


__all__ = ["load_signature", "save_signature", "storage_bytes"]
