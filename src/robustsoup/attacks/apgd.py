"""APGD for adversarial training, after robust-finetuning (Croce & Hein 2022).

Auto-PGD (Croce & Hein 2020) as the training attack of
fra31/robust-finetuning: no random start, cross-entropy, momentum 0.75.

* L∞ / L2: initial step 2ε; progress is checked at checkpoints, the first
  after ⌊0.22·n⌋ iterations, later ones closer by ⌊0.03·n⌋ down to ⌊0.06·n⌋
  (each at least 1; integer parts, as the reference's ``int()``). At a
  checkpoint a point whose loss rose in at most 75 % of the steps since the
  last one, or that did not improve and was not reduced last time, halves its
  step and restarts from its best point. As in the reference, the first step
  of the first window counts as a rise whenever its loss is positive (the
  reference compares it with a not yet written, zero, entry of its loss log).
* L1: steps of size ε spread over the top-k coordinates of |grad| (k starts at
  5 % of the input in training, 20 % for evaluation, then follows the current
  sparsity of the best point / 1.5); at each checkpoint (every ⌊0.04·n⌋
  iterations, at least 1) the step resets to ε where the sparsity fell by
  > 5 % and shrinks by 1.5 (down to ε/10) elsewhere. Every iterate is
  projected onto the L1 ball ∩ [0,1] box.

The model must be in eval mode; the attack returns the highest-loss point
found, which is what the training step uses. Under fp16 autocast each image's
loss is scaled before the gradient is taken (:mod:`robustsoup.attacks.gradients`).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from .gradients import input_gradient
from .projections import NORMS, _per_image, lp_norm, project

MOMENTUM = 0.75
L1_TOPK_TRAIN = 0.05
L1_TOPK_EVAL = 0.2


def _loss_and_grad(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, need_grad: bool):
    x_adv = x_adv.detach().requires_grad_(need_grad)
    with torch.set_grad_enabled(need_grad):
        logits = model(x_adv)
        loss = F.cross_entropy(logits.float(), y, reduction="none")
    grad = input_gradient(loss, logits, y, x_adv).detach() if need_grad else None
    return loss.detach(), logits.detach().argmax(1) == y, grad


def _l1_sparse_direction(grad: torch.Tensor, topk: torch.Tensor) -> torch.Tensor:
    """sign(grad) on the top ``topk`` fraction of |grad| per image, scaled to unit L1 norm.

    The scale counts the non-zero signs, as the reference does (a zero gradient inside the top-k moves nothing).
    """
    flat = grad.abs().flatten(1)
    n = flat.shape[1]
    sorted_abs = flat.sort(dim=1).values
    position = ((1.0 - topk) * n).clamp(0, n - 1).long()
    threshold = sorted_abs.gather(1, position.unsqueeze(1))
    mask = (flat >= threshold).to(grad.dtype)
    direction = grad.sign().flatten(1) * mask
    return (direction / (direction.abs().sum(dim=1, keepdim=True) + 1e-10)).view_as(grad)


def apgd_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    n_iter: int = 10,
    training: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run APGD-CE; return (highest-loss points, per-point robustness mask).

    ``x`` is (N, C, H, W) in [0,1]; ε is in pixel space. The mask is True for
    points the attack never misclassified (the running robust accuracy of
    multi-norm training). ``training`` picks the L1 sparsity start (5 % vs 20 %).
    """
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    if not eps > 0:
        raise ValueError(f"ε must be positive, got {eps}")
    if model.training:
        raise RuntimeError("apgd_train needs the model in eval mode (BatchNorm must not update during the attack)")
    x = x.detach()
    batch = x.shape[0]
    n_features = math.prod(x.shape[1:])
    shape = (batch, *[1] * (x.dim() - 1))

    if norm == "L1":
        checkpoint_every = max(int(0.04 * n_iter), 1)
        topk = torch.full((batch,), L1_TOPK_TRAIN if training else L1_TOPK_EVAL, device=x.device)
        sparsity_old = torch.full((batch,), float(n_features), device=x.device)
        base_step = eps
    else:
        checkpoint_every = max(int(0.22 * n_iter), 1)
        min_checkpoint = max(int(0.06 * n_iter), 1)
        checkpoint_shrink = max(int(0.03 * n_iter), 1)
        base_step = 2.0 * eps
    step = torch.full(shape, base_step, device=x.device)

    x_adv = x.clone()
    loss, correct, grad = _loss_and_grad(model, x_adv, y, need_grad=True)
    robust = correct.clone()
    x_best, loss_best, grad_best = x_adv.clone(), loss.clone(), grad.clone()
    # The rise of the first step is judged against 0, as the reference's loss log does (see the module docstring).
    loss = torch.zeros_like(loss)
    loss_best_at_check = loss_best.clone()
    reduced_at_check = torch.ones(batch, dtype=torch.bool, device=x.device)
    increases = torch.zeros(batch, device=x.device)
    since_check = 0
    x_prev = x_adv.clone()

    for i in range(n_iter):
        if norm == "L1":
            direction = _l1_sparse_direction(grad, topk)
            x_next = x + project(x_adv + step * direction - x, x, "L1", eps)
        else:
            direction = grad.sign() if norm == "Linf" else grad / _per_image(lp_norm(grad, "L2").clamp_min(1e-12), grad)
            z = x + project(x_adv + step * direction - x, x, norm, eps)
            a = MOMENTUM if i > 0 else 1.0
            x_next = x + project(x_adv + a * (z - x_adv) + (1 - a) * (x_adv - x_prev) - x, x, norm, eps)
        x_prev, x_adv = x_adv, x_next

        loss_new, correct, grad_new = _loss_and_grad(model, x_adv, y, need_grad=i < n_iter - 1)
        robust &= correct
        increases += (loss_new > loss).float()
        loss = loss_new
        if grad_new is not None:
            grad = grad_new
        improved = loss > loss_best
        x_best[improved] = x_adv[improved]
        grad_best[improved] = grad[improved]
        loss_best = torch.where(improved, loss, loss_best)

        since_check += 1
        if since_check < checkpoint_every:
            continue
        since_check = 0
        if norm == "L1":
            sparsity = (x_best - x).flatten(1).ne(0).sum(dim=1).float()
            sparser = sparsity / sparsity_old < 0.95
            topk = sparsity / n_features / 1.5
            step = torch.where(_per_image(sparser, step), torch.full_like(step, base_step), step / 1.5)
            step = step.clamp(base_step / 10.0, base_step)
            sparsity_old = sparsity
            restart = sparser
        else:
            oscillating = increases <= checkpoint_every * MOMENTUM
            stalled = ~reduced_at_check & (loss_best_at_check >= loss_best)
            restart = oscillating | stalled
            reduced_at_check = restart.clone()
            loss_best_at_check = loss_best.clone()
            step = torch.where(_per_image(restart, step), step / 2.0, step)
            checkpoint_every = max(checkpoint_every - checkpoint_shrink, min_checkpoint)
            increases.zero_()
        x_adv[restart] = x_best[restart]
        grad[restart] = grad_best[restart]
    return x_best.detach(), robust
