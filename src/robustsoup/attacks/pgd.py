"""PGD for adversarial training under L∞, L2 and L1 (Madry et al. 2018).

L∞ takes signed-gradient steps, L2 normalized-gradient steps, and L1 sparse
steps over the top fraction of gradient coordinates (as in Croce & Hein's
L1 attacks), each followed by the exact or feasible projection onto the
ε-ball ∩ [0,1] box. The caller puts the model in eval mode. Under fp16 autocast
each image's loss is scaled before the gradient is taken (:mod:`robustsoup.attacks.gradients`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .gradients import input_gradient
from .projections import NORMS, _per_image, lp_norm, project

L1_TOPK_FRACTION = 0.05  # robust-finetuning's initial sparsity for training


def _random_start(x: torch.Tensor, norm: str, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    noise = torch.rand(x.shape, generator=generator, device="cpu").to(x.device) * 2 - 1
    if norm == "Linf":
        delta = noise * eps
    else:
        p = "L2" if norm == "L2" else "L1"
        delta = noise / _per_image(lp_norm(noise, p).clamp_min(1e-12), noise) * eps * 0.5
    return project(delta, x, norm, eps)


def _steepest_step(grad: torch.Tensor, delta: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """Direction of unit ``norm`` that increases the loss most (to first order)."""
    if norm == "Linf":
        return grad.sign()
    if norm == "L2":
        return grad / _per_image(lp_norm(grad, "L2").clamp_min(1e-12), grad)
    # L1: move only coordinates that can still move in the gradient's direction.
    movable = ~(((x + delta) <= 0) & (grad < 0) | ((x + delta) >= 1) & (grad > 0))
    score = (grad.abs() * movable).flatten(1)
    k = max(1, int(L1_TOPK_FRACTION * score.shape[1]))
    threshold = score.topk(k, dim=1).values[:, -1:]
    mask = (score >= threshold) & (score > 0)
    direction = grad.sign().flatten(1) * mask
    direction = direction / direction.abs().sum(dim=1, keepdim=True).clamp_min(1.0)
    return direction.view_as(grad)


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    steps: int,
    step_size: float | None = None,
    random_start: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Return adversarial images in the ``norm`` ball of radius ``eps`` around ``x`` ∩ [0,1].

    ``x`` is (N, C, H, W) in [0,1]; the step defaults to 2.5·eps/steps. The
    point of highest cross-entropy seen over the iterations is returned.
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    step_size = step_size if step_size is not None else 2.5 * eps / steps
    x = x.detach()
    delta = _random_start(x, norm, eps, generator) if random_start else torch.zeros_like(x)
    best_delta = delta.clone()
    best_loss = torch.full((x.shape[0],), -float("inf"), device=x.device)
    for _ in range(steps):
        delta.requires_grad_(True)
        logits = model(x + delta)
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        grad = input_gradient(loss, logits, y, delta)
        with torch.no_grad():
            improved = loss.detach() > best_loss
            best_loss = torch.where(improved, loss.detach(), best_loss)
            best_delta[improved] = delta.detach()[improved]
            step = _steepest_step(grad, delta.detach(), x, norm)
            delta = project(delta.detach() + step_size * step, x, norm, eps)
    with torch.no_grad():
        final_loss = F.cross_entropy(model(x + delta), y, reduction="none")
        improved = final_loss > best_loss
        best_delta[improved] = delta[improved]
    return (x + best_delta).detach()
