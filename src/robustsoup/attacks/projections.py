"""Projections onto Lp balls intersected with the [0,1] pixel box.

Every function takes a perturbation ``delta`` of images ``x`` (both
(N, C, H, W), pixel space [0,1]) and returns a perturbation with
‖delta‖_p ≤ eps per image and 0 ≤ x + delta ≤ 1.
"""

from __future__ import annotations

import torch

NORMS = ("Linf", "L2", "L1")


def _per_image(norms: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return norms.view(-1, *([1] * (like.dim() - 1)))


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-image Lp norm of ``delta``: shape (N,)."""
    flat = delta.flatten(1)
    if norm == "Linf":
        return flat.abs().amax(dim=1)
    if norm == "L2":
        return flat.norm(p=2, dim=1)
    if norm == "L1":
        return flat.abs().sum(dim=1)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")


def project_linf(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Exact projection onto the L∞ ball ∩ box (both are boxes)."""
    return (x + delta.clamp(-eps, eps)).clamp(0.0, 1.0) - x


def project_l2(delta: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Scale into the L2 ball, then clip to the box (feasible; clipping only shrinks the norm)."""
    norms = lp_norm(delta, "L2").clamp_min(1e-12)
    scale = _per_image((eps / norms).clamp(max=1.0), delta)
    return (x + delta * scale).clamp(0.0, 1.0) - x


def project_l1(delta: torch.Tensor, x: torch.Tensor, eps: float, iterations: int = 40) -> torch.Tensor:
    """Euclidean projection onto {‖d‖₁ ≤ eps} ∩ {0 ≤ x + d ≤ 1}.

    The problem separates per coordinate once the L1 constraint is dualised:
    d_i(λ) = clip(soft_threshold(v_i, λ), −x_i, 1 − x_i), whose L1 norm falls
    monotonically in λ ≥ 0. λ is found by bisection; the upper end of the
    bracket is returned, so the result is always feasible.

    Inside the bisection only the L1 norm of d(λ) is needed: |d_i(λ)| = min(max(|v_i| − λ, 0), c_i) with
    c_i = 1 − x_i where v_i > 0 and x_i where v_i < 0, the same float values as |clip(…)| (a sign flip and a
    clip are exact), summed in the same order: the same λ as solving for d at every step, in half the work.
    """
    lower, upper = -x, 1.0 - x
    magnitude = delta.abs()

    def solve(lam: torch.Tensor) -> torch.Tensor:
        shrunk = delta.sign() * (magnitude - _per_image(lam, delta)).clamp_min(0.0)
        return torch.maximum(torch.minimum(shrunk, upper), lower)

    zero = torch.zeros(delta.shape[0], dtype=delta.dtype, device=delta.device)
    candidate = solve(zero)
    inside = lp_norm(candidate, "L1") <= eps
    if bool(inside.all()):
        return candidate
    flat = magnitude.flatten(1)
    room = torch.where(delta > 0, upper, x).flatten(1)  # c_i: how far the box lets coordinate i move
    lo = zero.clone()
    hi = flat.amax(dim=1)  # at λ = max|v| the solution is 0
    for _ in range(iterations):
        mid = (lo + hi) / 2
        too_big = torch.minimum((flat - mid[:, None]).clamp_min_(0.0), room).sum(dim=1) > eps
        lo = torch.where(too_big, mid, lo)
        hi = torch.where(too_big, hi, mid)
    projected = solve(hi)
    return torch.where(_per_image(inside, delta), candidate, projected)


def project(delta: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Project onto the ``norm`` ball of radius ``eps`` ∩ [0,1] box."""
    if norm == "Linf":
        return project_linf(delta, x, eps)
    if norm == "L2":
        return project_l2(delta, x, eps)
    if norm == "L1":
        return project_l1(delta, x, eps)
    raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
