"""Adversarial evaluation with AutoAttack's APGD (pyautoattack), per point.

Two modes, named in every table:

* ``standard``: APGD-CE, then APGD-T (DLR loss, 9 target classes) on the
  points still robust, 100 iterations each — the evaluation of
  robust-finetuning (10 runs of 100 steps). For L1, 5 restarts of each and
  AutoAttack's ε schedule 3ε → 2ε → ε (``use_largereps``).
* ``fast``: APGD-CE alone with the given iterations and restarts (L1 with the
  ε schedule, without which APGD-CE overestimates L1 robustness), for the
  embedded default's CPU budget.

Every returned adversarial point is checked to lie in its ε-ball ∩ [0,1]
box, and correctness is recomputed here, per point, so that union accuracy
over norms is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .projections import lp_norm

# Float32 round-off of pyautoattack's projections, relative to ε.
BALL_TOLERANCE = 1e-4
EVALUATION_MODES = ("fast", "standard")


@dataclass(frozen=True)
class AttackPlan:
    """Which APGD runs make up one evaluation, and what the tables call it."""

    mode: str
    n_iter: int
    restarts_ce: int
    n_target_classes: int
    restarts_t: int

    @property
    def name(self) -> str:
        if self.n_target_classes:
            return f"apgd-ce+apgd-t({self.n_iter}it, {self.restarts_ce}+{self.n_target_classes}×{self.restarts_t} runs)"
        return f"apgd-ce({self.n_iter}it×{self.restarts_ce})"


def attack_plan(mode: str, norm: str, num_classes: int, n_iter: int = 100, n_restarts: int = 1) -> AttackPlan:
    """The APGD runs of ``mode`` for ``norm``; ``n_iter``/``n_restarts`` apply to ``fast`` only."""
    if mode == "fast":
        return AttackPlan("fast", n_iter, n_restarts, 0, 0)
    if mode == "standard":
        restarts = 5 if norm == "L1" else 1
        return AttackPlan("standard", 100, restarts, min(9, num_classes - 1), restarts)
    raise ValueError(f"unknown evaluation mode {mode!r}; expected one of {EVALUATION_MODES}")


def apgd_ce_name(n_iter: int, n_restarts: int) -> str:
    """How the tables name the fast attack, e.g. ``apgd-ce(20it×1)``."""
    return AttackPlan("fast", n_iter, n_restarts, 0, 0).name


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def robust_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    plan: AttackPlan,
    seed: int = 0,
    batch_size: int = 250,
) -> torch.Tensor:
    """Per-point robust correctness (bool (N,)) under the attacks of ``plan``.

    A point counts as robust only if it is classified correctly clean and at
    the output of every attack. ``x`` is in [0,1]; the model must be in eval
    mode and in float32.
    """
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    if model.training:
        raise RuntimeError("evaluation attacks need the model in eval mode")
    device = x.device
    largereps = norm == "L1"
    attacks = [
        APGDAttack(
            model,
            n_iter=plan.n_iter,
            norm=norm,
            n_restarts=plan.restarts_ce,
            eps=eps,
            seed=seed,
            loss="ce",
            device=device,
            use_largereps=largereps,
        )
    ]
    if plan.n_target_classes:
        attacks.append(
            APGDAttack_targeted(
                model,
                n_iter=plan.n_iter,
                norm=norm,
                n_restarts=plan.restarts_t,
                eps=eps,
                seed=seed,
                n_target_classes=plan.n_target_classes,
                device=device,
                use_largereps=largereps,
            )
        )
    correct = []
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        robust = _predict(model, xb, batch_size) == yb
        for attack in attacks:
            todo = robust.nonzero().flatten()
            if len(todo) == 0:
                break
            x_adv = attack.perturb(xb[todo], yb[todo]).detach()
            _check_threat_model(x_adv, xb[todo], norm, eps)
            robust[todo] = _predict(model, x_adv, batch_size) == yb[todo]
        correct.append(robust)
    return torch.cat(correct)


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
    """Per-point robust correctness under APGD-CE alone (the fast mode)."""
    return robust_correct(
        model, x, y, norm, eps, attack_plan("fast", norm, 0, n_iter, n_restarts), seed=seed, batch_size=batch_size
    )


def _check_threat_model(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> None:
    size = lp_norm(x_adv - x, norm)
    if bool((size > eps * (1 + BALL_TOLERANCE)).any()):
        raise RuntimeError(
            f"APGD returned a point outside the {norm} ball: largest norm {size.max().item():.6g} > ε={eps}"
        )
    if bool((x_adv < -1e-6).any() or (x_adv > 1 + 1e-6).any()):
        raise RuntimeError("APGD returned a point outside the [0,1] box")
