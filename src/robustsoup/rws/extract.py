"""Extracting a Robust Weight Signature: the expert's move with the standard model's direction projected out.

    Δ = θ_e − θ₀,   â = (θ_std − θ₀) / ‖θ_std − θ₀‖,   RWS = Δ − (Δ·â) â

over the tensors of a :class:`~robustsoup.rws.layers.LayerPlan` (kinds ``weight`` and ``norm``);
BatchNorm running statistics get the expert's relative to the standard model's (kinds ``mean``,
``logvar``) and replaced tensors the expert's own (kind ``replace``), as :mod:`.layers` describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..weights import WeightMismatchError, check_compatible, task_vector
from .layers import LayerPlan
from .signatures import PROJECTED, Signature, SignatureError, SignatureMeta, StateDict

_TINY_VARIANCE = 1e-12  # floor before taking a log: a dead channel's variance can be 0


def project_out(delta: torch.Tensor, direction: torch.Tensor) -> torch.Tensor:
    """``delta − (delta·â) â`` with â = direction/‖direction‖, in float64; ``delta`` if ‖direction‖ = 0."""
    d = delta.detach().to("cpu", torch.float64)
    a = direction.detach().to("cpu", torch.float64)
    norm = a.norm()
    if norm == 0:
        return d.clone()
    unit = a / norm
    return d - (d.flatten() @ unit.flatten()) * unit


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


__all__ = ["extract_signature", "project_out"]
