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
import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from ..checkpoint import load_checkpoint, save_checkpoint
from ..io import atomic_path
from ..weights import apply_delta
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
    "OTHER_BASE_ADVICE",
    "Patch",
    "apply_signatures",
    "check_applicable",
    "other_base_problems",
    "patch_checkpoint",
    "patched",
    "patched_state",
    "state_digest",
    "unpatch_checkpoint",
    "unpatch_companion",
]
