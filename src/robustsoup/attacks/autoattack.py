"""Adversarial evaluation with AutoAttack's APGD (pyautoattack), per point.

Three modes (``evaluate.mode``), named in every table by their plan's runs:

* ``standard``: AutoAttack's standard version as robust-finetuning's eval.py
  runs it (``attacks_to_run = ['apgd-ce', 'apgd-t']``), 100 iterations per
  run. L∞ / L2: APGD-CE with 1 restart, then APGD-T (DLR loss) with 9 target
  classes × 1 restart on the points still robust. L1: APGD-CE with 5
  restarts, then APGD-T with 5 target classes × 1 restart, both with the ε
  schedule 3ε → 2ε → ε (``use_largereps``) — the protocol of every published
  L1 AutoAttack number.
* ``strong-l1``: ``standard``, except that L1's APGD-T runs 9 target classes ×
  5 restarts (45 runs instead of 5, about 5× the L1 cost); stronger than the
  protocol, so its L1 numbers compare with no published one.
* ``fast``: APGD-CE alone with the given iterations and restarts (L1 with the
  ε schedule, without which APGD-CE overestimates L1 robustness), for the
  embedded default's CPU budget.

Every returned adversarial point is checked to lie in its ε-ball ∩ [0,1]
box, and correctness is recomputed here, per point, so that union accuracy
over norms is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..models.memory_format import computing_in
from ..progress import Progress
from .projections import lp_norm

# Float32 round-off of pyautoattack's projections, relative to ε.
BALL_TOLERANCE = 1e-4
EVALUATION_MODES = ("fast", "standard", "strong-l1")
# AutoAttack's L1 schedule (use_largereps): radii 3ε, 2ε, ε over 30 %, 30 % and the rest of the iterations.
LARGEREPS_EPS = (3.0, 2.0, 1.0)
LARGEREPS_SHARES = (0.3, 0.3)
STANDARD_ITERATIONS = 100
# `evaluate.batch_size: auto`: points per attack batch on the CPU (the earlier fixed default), and on CUDA for
# images up to AUTO_SMALL_IMAGE px or larger ones. 1000 at 32 px is an estimate (roughly 10 GB of activations
# for PreAct ResNet-18's backward pass), as is 250 for ResNet-50 at 224 px (some 25 GB): neither measured.
AUTO_BATCH_CPU = 250
AUTO_BATCH_CUDA = {"small": 1000, "large": 250}
AUTO_SMALL_IMAGE = 64


def largereps_iterations(n_iter: int) -> tuple[int, int, int]:
    """Iterations at 3ε, 2ε and ε out of ``n_iter``, split as pyautoattack's ``perturb`` does.

    The first two stages take ⌈0.3·n⌉ each, the last the remainder (100 → 30, 30, 40; 20 → 6, 6, 8;
    2 → 1, 1, 0: the last stage only projects onto the ε-ball).
    """
    first, second = (math.ceil(share * n_iter) for share in LARGEREPS_SHARES)
    last = n_iter - first - second
    if last < 0:
        raise ValueError(
            f"the L1 ε schedule 3ε → 2ε → ε needs n_iter ≥ 2 (pyautoattack fails below); got n_iter={n_iter}. "
            "Raise evaluate.n_iter (or soups.ternary.n_iter)."
        )
    return first, second, last


@dataclass(frozen=True)
class AttackPlan:
    """Which APGD runs make up one evaluation of one norm, and what the tables call it.

    APGD-CE runs ``restarts_ce`` times; APGD-T (when ``n_target_classes`` > 0)
    runs ``restarts_t`` times per target class. A non-empty ``eps_schedule``
    (L1 only; AutoAttack's ``use_largereps``) splits every run into stages at
    those multiples of ε, with the iterations of :attr:`iter_schedule`.
    """

    mode: str
    n_iter: int
    restarts_ce: int
    n_target_classes: int
    restarts_t: int
    eps_schedule: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.eps_schedule not in ((), LARGEREPS_EPS):
            raise ValueError(
                f"pyautoattack runs only the ε schedule {LARGEREPS_EPS} (use_largereps) or none; "
                f"got {self.eps_schedule}"
            )
        if self.eps_schedule:
            largereps_iterations(self.n_iter)

    @property
    def iter_schedule(self) -> tuple[int, ...]:
        """Iterations per stage of :attr:`eps_schedule` (``(n_iter,)`` without a schedule)."""
        return largereps_iterations(self.n_iter) if self.eps_schedule else (self.n_iter,)

    @property
    def runs(self) -> int:
        """APGD runs per point at most (fewer when points fall early): CE restarts + targets × restarts."""
        return self.restarts_ce + self.n_target_classes * self.restarts_t

    @property
    def name(self) -> str:
        if self.n_target_classes:
            return f"apgd-ce+apgd-t({self.n_iter}it, {self.restarts_ce}+{self.n_target_classes}×{self.restarts_t} runs)"
        return f"apgd-ce({self.n_iter}it×{self.restarts_ce})"


def attack_plan(mode: str, norm: str, num_classes: int, n_iter: int = 100, n_restarts: int = 1) -> AttackPlan:
    """The APGD runs of ``mode`` for ``norm``; ``n_iter``/``n_restarts`` apply to ``fast`` only.

    ``standard`` is AutoAttack's ``set_version('standard')``; target classes
    are capped at ``num_classes − 1`` (AutoAttack assumes ≥ 10 classes).
    """
    schedule = LARGEREPS_EPS if norm == "L1" else ()
    if mode == "fast":
        return AttackPlan("fast", n_iter, n_restarts, 0, 0, schedule)
    if mode not in EVALUATION_MODES:
        raise ValueError(f"unknown evaluation mode {mode!r}; expected one of {EVALUATION_MODES}")
    if norm != "L1":
        return AttackPlan(mode, STANDARD_ITERATIONS, 1, min(9, num_classes - 1), 1)
    if mode == "standard":
        return AttackPlan(mode, STANDARD_ITERATIONS, 5, min(5, num_classes - 1), 1, schedule)
    return AttackPlan(mode, STANDARD_ITERATIONS, 5, min(9, num_classes - 1), 5, schedule)


def attack_batch_size(setting: int | str, device: torch.device | str, image_size: int) -> int:
    """Points per evaluation attack batch for ``evaluate.batch_size`` (an integer, or ``auto``) on ``device``
    for square images of ``image_size`` px: ``auto`` is :data:`AUTO_BATCH_CPU` off CUDA, and on CUDA
    :data:`AUTO_BATCH_CUDA` ``small`` up to :data:`AUTO_SMALL_IMAGE` px, ``large`` above.

    A fixed size per kind of device rather than one read from free memory: the batch decides AutoAttack's
    random starts (seeded per batch), so a given config gives the same numbers on every GPU.
    """
    if setting != "auto":
        if isinstance(setting, bool) or not isinstance(setting, int) or setting < 1:
            raise ValueError(f"evaluate.batch_size must be a positive integer or 'auto'; got {setting!r}")
        return setting
    if torch.device(device).type != "cuda":
        return AUTO_BATCH_CPU
    return AUTO_BATCH_CUDA["small" if image_size <= AUTO_SMALL_IMAGE else "large"]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


class _PadLogits(nn.Module):
    """``model`` with its logits padded to four classes by ``min − 1`` (below every real class).

    APGD-T's targeted DLR loss divides by π₁ − (π₃ + π₄)/2 of the sorted logits, which needs four
    classes; with two or three, the padded entries stand in for π₃/π₄ and are never a target (they
    are below every real logit, and the targets are the runners-up). Four classes or more: unchanged.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        missing = 4 - logits.shape[1]
        if missing <= 0:
            return logits
        pad = logits.min(dim=1, keepdim=True).values - 1
        return torch.cat([logits, pad.expand(-1, missing)], dim=1)


def _padded_logits(model: nn.Module) -> nn.Module:
    return _PadLogits(model).eval()


def robust_correct(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    norm: str,
    eps: float,
    plan: AttackPlan,
    seed: int = 0,
    batch_size: int = 250,
    counter: Progress | None = None,
    channels_last: bool = False,
) -> torch.Tensor:
    """Per-point robust correctness (bool (N,)) under the attacks of ``plan``; ``counter`` counts each batch.

    A point counts as robust only if it is classified correctly clean and at
    the output of every attack. ``x`` is in [0,1]; the model must be in eval
    mode and in float32. Batches of ``batch_size`` points go through every
    attack in turn; AutoAttack instead batches the points still robust before
    each attack, which gives the same random starts (and numbers) when all
    points fit in one batch. ``channels_last``: the model computes in that
    memory format (oneDNN's faster convolutions on a CPU; see
    :func:`robustsoup.device.resolve_channels_last`), AutoAttack's code unchanged.
    """
    if model.training:
        raise RuntimeError("evaluation attacks need the model in eval mode")
    if bool(plan.eps_schedule) != (norm == "L1"):
        raise ValueError(
            f"an L1 plan runs AutoAttack's ε schedule {LARGEREPS_EPS} and no other norm does; got the schedule "
            f"{plan.eps_schedule or 'none'} for {norm}. Build the plan with attack_plan(mode, {norm!r}, …)."
        )
    device = x.device
    correct = [torch.zeros(0, dtype=torch.bool, device=device)]  # no points (an empty shard): no batch
    with computing_in(model, channels_last) as model:
        attacks = _apgd_attacks(model, norm, eps, plan, seed, device)
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
            if counter is not None:
                counter.advance()
    return torch.cat(correct)


def _apgd_attacks(model: nn.Module, norm: str, eps: float, plan: AttackPlan, seed: int, device) -> list:
    """pyautoattack's APGD-CE, then (with target classes) APGD-T, configured as ``plan`` says."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    largereps = bool(plan.eps_schedule)
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
                _padded_logits(model),
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
    return attacks


def _check_threat_model(x_adv: torch.Tensor, x: torch.Tensor, norm: str, eps: float) -> None:
    size = lp_norm(x_adv - x, norm)
    if bool((size > eps * (1 + BALL_TOLERANCE)).any()):
        raise RuntimeError(
            f"APGD returned a point outside the {norm} ball: largest norm {size.max().item():.6g} > ε={eps}"
        )
    if bool((x_adv < -1e-6).any() or (x_adv > 1 + 1e-6).any()):
        raise RuntimeError("APGD returned a point outside the [0,1] box")
