"""Adversarial evaluation with AutoAttack's APGD (pyautoattack), per point.

The fast mode runs APGD-CE alone (Croce & Hein 2020), with the restarts and
iterations the caller gives; for L1 it uses AutoAttack's ε schedule
3ε → 2ε → ε (``use_largereps``), without which APGD-CE overestimates L1
robustness. Every returned adversarial point is checked to lie in its
ε-ball ∩ [0,1] box, and correctness is recomputed here, per point, so that
union accuracy over norms is exact.
"""

from __future__ import annotations

import torch
from torch import nn

from .projections import lp_norm

# Float32 round-off of pyautoattack's projections, relative to ε.
BALL_TOLERANCE = 1e-4


def apgd_ce_name(n_iter: int, n_restarts: int) -> str:
    """How the tables name the attack, e.g. ``apgd-ce(20it×1)``."""
    return f"apgd-ce({n_iter}it×{n_restarts})"


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def robust_correct_apgd_ce(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    n_iter: int,
    n_restarts: int = 1,
    seed: int = 0,
    batch_size: int = 250,
) -> torch.Tensor:
    """Per-point robust correctness (bool (N,)) under APGD-CE in the ``norm`` ε-ball.

    A point counts as robust only if it is classified correctly both clean
    and at the attack's output. ``x`` is in [0,1]; the model is put in eval
    mode by the caller.
    """
    from pyautoattack.autopgd_base import APGDAttack

    device = x.device
    attack = APGDAttack(
        model,
        n_iter=n_iter,
        norm=norm,
        n_restarts=n_restarts,
        eps=eps,
        seed=seed,
        loss="ce",
        device=device,
        use_largereps=(norm == "L1"),
    )
    correct = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        clean_ok = _predict(model, xb, batch_size) == yb
        x_adv = attack.perturb(xb, yb).detach()
        _check_threat_model(x_adv, xb, norm, eps)
        adv_ok = _predict(model, x_adv, batch_size) == yb
        correct.append(clean_ok & adv_ok)
    return torch.cat(correct)


def _check_threat_model(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> None:
    size = lp_norm(x_adv - x, norm)
    if bool((size > eps * (1 + BALL_TOLERANCE)).any()):
        raise RuntimeError(
            f"APGD returned a point outside the {norm} ball: largest norm {size.max().item():.6g} > ε={eps}"
        )
    if bool((x_adv < -1e-6).any() or (x_adv > 1 + 1e-6).any()):
        raise RuntimeError("APGD returned a point outside the [0,1] box")
