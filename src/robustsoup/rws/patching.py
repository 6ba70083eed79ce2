"""Patching with Robust Weight Signatures: θ = θ_std + Σ λᵢ RWSᵢ on a state dict, a live model or a checkpoint.

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
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from ..checkpoint import load_checkpoint, save_checkpoint, tensors_sha256
from ..io import atomic_path
from ..lineage import record_of
from ..weights import apply_delta
from .bases import check_bases
from .signature_file import load_signature
from .signatures import FORMAT, Signature, SignatureError, StateDict, check_same_kinds, combined_values


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
    kinds = check_same_kinds(signatures)
    total = combined_values(signatures, coefficients)
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


state_digest = tensors_sha256  # the one canonical digest of a state dict (keys, dtypes, shapes, bytes)


# --------------------------------------------------------------------------- checkpoints (CLI)


def unpatch_companion(path: str | Path) -> Path:
    """``out.safetensors`` → ``out.unpatch.safetensors`` (the original tensors a patch replaced)."""
    path = Path(path)
    return path.with_name(path.stem + ".unpatch.safetensors")


def patch_checkpoint(
    model_path: str | Path,
    specs: Sequence[tuple[str | Path, float]],
    out_path: str | Path,
    allow_unrelated: bool = False,
    warn: Callable[[str], None] | None = None,
    trust_unverified: bool = False,
    advice: str = "pass --allow-unrelated to apply it anyway",
) -> Path:
    """``robustsoup patch MODEL --rws a.safetensors:0.8 … -o OUT``: write the patched checkpoint.

    Beside it, ``OUT.unpatch.safetensors`` keeps exact copies of the replaced tensors, and the
    sidecar's provenance records the base model, its content digest and every (signature, λ); its
    lineage starts with the base. A signature extracted against a model that shares no trained
    ancestor with this one is refused unless ``allow_unrelated``; one extracted against a relative
    (the transfer table's shared initialization) is applied with a warning
    (:func:`robustsoup.rws.bases.check_bases`).
    """
    state, meta = load_checkpoint(model_path, trust_unverified=trust_unverified, warn=warn)
    signatures = [load_signature(path) for path, _ in specs]
    check_bases(meta, signatures, allow_unrelated, advice, warn)
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
    meta.lineage = [record_of(meta), *meta.lineage]
    meta.name, meta.weights_sha256, meta.created, meta.git_commit = out_path.stem, "", "", ""
    return save_checkpoint(out_path, new, meta)


def unpatch_checkpoint(
    patched_path: str | Path, out_path: str | Path, trust_unverified: bool = False, warn=None
) -> Path:
    """``robustsoup unpatch PATCHED -o OUT``: restore the base checkpoint bit for bit.

    Fails if the companion file is missing or the restored tensors do not hash to the digest
    recorded at patch time.
    """
    state, meta = load_checkpoint(patched_path, trust_unverified=trust_unverified, warn=warn)
    record = meta.provenance.get("rws_patch")
    if not record:
        raise SignatureError(
            f"{patched_path} is not a patched checkpoint (no rws_patch in its sidecar provenance); give a checkpoint "
            "written by robustsoup patch"
        )
    companion = unpatch_companion(patched_path)
    if not companion.is_file():
        raise SignatureError(
            f"{companion} is missing: it holds the original tensors needed to unpatch exactly; robustsoup patch "
            "wrote it beside the patched checkpoint: put it back beside it"
        )
    originals = load_torch(str(companion))
    restored = {k: originals.get(k, v) for k, v in state.items()}
    if state_digest(restored) != record["base_digest"]:
        raise SignatureError(
            f"unpatching {patched_path} did not reproduce the base model {record['base']} "
            "(its companion file belongs to another patch)"
        )
    meta.provenance = {k: v for k, v in meta.provenance.items() if k != "rws_patch"}
    if meta.lineage and meta.lineage[0].get("weights_sha256") == record["base_weights_sha256"]:
        meta.lineage = meta.lineage[1:]  # the base's own lineage
    meta.name, meta.weights_sha256, meta.created, meta.git_commit = record["base"], "", "", ""
    return save_checkpoint(out_path, restored, meta)


__all__ = [
    "Patch",
    "apply_signatures",
    "check_applicable",
    "patch_checkpoint",
    "patched",
    "patched_state",
    "state_digest",
    "unpatch_checkpoint",
    "unpatch_companion",
]
