"""Scoring many soups fast, and choosing one from a few labelled images.

The soups paper (Croce et al. 2023, Sec. 4) picks, per distribution shift,
the soup of a grid that is most accurate on a small labelled adaptation set.
:class:`SoupScorer` makes that cheap: one model instance whose tensors are
overwritten in place for every soup, inputs normalized once and kept in
memory. Selection methods, in :data:`SELECTION_METHODS`:

* ``grid`` — the paper's exhaustive grid search;
* ``greedy`` — model-soups' greedy soup (Wortsman et al. 2022): add an
  ingredient to the uniform average only if it strictly helps;
* ``learned`` — gradient descent on the mixing weights (the paper's stated
  future work), weights kept on the affine plane Σw = 1;
* ``halving`` — successive halving: score every soup on a few images, keep
  the best fraction, grow the images.

Each returns a :class:`Selection` that counts its soup × image forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

from ..device import Arithmetic
from ..models import Normalized
from ..weights import StateDict, WeightStack


@dataclass
class Selection:
    """A chosen soup: weights by base model, its adaptation accuracy, and the cost of finding it."""

    method: str
    weights: dict[str, float]
    adaptation_accuracy: float
    forward_passes: int
    details: dict = field(default_factory=dict)


class SoupScorer:
    """Evaluate soups Σ wᵢθᵢ of ``states`` on in-memory images, without rebuilding anything.

    ``model`` is a :class:`Normalized` model of the states' architecture; its
    tensors are overwritten in place for each soup. Inputs are normalized
    once by :meth:`prepare`. ``arithmetic`` is the autocast and memory format
    of the forward passes (bf16 + channels_last is fast on recent CPUs and GPUs; scores may
    differ from float32 in the last digits, so final numbers come from the
    float32 evaluation rules).
    """

    def __init__(
        self,
        model: Normalized,
        states: Sequence[StateDict],
        names: Sequence[str],
        device: torch.device | str = "cpu",
        arithmetic: Arithmetic | None = None,
        batch_size: int = 512,
    ) -> None:
        self.names = list(names)
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.net = model.net
        self.arithmetic = arithmetic or Arithmetic()
        self.batch_size = batch_size
        if self.arithmetic.channels_last:
            self.net.to(memory_format=torch.channels_last)
        own = self.net.state_dict(keep_vars=True)
        self.targets = {k: own[k] for k in own if torch.is_floating_point(own[k])}
        self.stack = WeightStack(states, names, keys={k: f"net.{k}" for k in self.targets}, device=self.device)
        self.forward_passes = 0

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N,3,H,W) or float [0,1] images → normalized network inputs, kept on the device."""
        x = images.to(self.device)
        x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
        x = (x - self.model.mean) / self.model.std
        return x.contiguous(memory_format=torch.channels_last) if self.arithmetic.channels_last else x

    def _weight_vector(self, weights: Mapping[str, float] | Sequence[float]) -> torch.Tensor:
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(self.names)
            if unknown:
                raise KeyError(f"soup weights name unknown models {sorted(unknown)}; known: {self.names}")
            weights = [float(weights.get(n, 0.0)) for n in self.names]
        return torch.as_tensor(list(weights), dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def load(self, weights: Mapping[str, float] | Sequence[float]) -> None:
        """Overwrite the model's tensors with the soup (running variances floored as in
        :func:`robustsoup.weights.affine_combination`)."""
        mixed = self.stack.mix(self._weight_vector(weights))
        for key, target in self.targets.items():
            target.copy_(mixed[key])

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the loaded soup on prepared inputs (counts the forward passes)."""
        out = []
        with self.arithmetic.autocast(self.device):
            for start in range(0, len(inputs), self.batch_size):
                out.append(self.net(inputs[start : start + self.batch_size]).float())
        self.forward_passes += len(inputs)
        return torch.cat(out)

    def correct(self, weights, inputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per-point correctness (bool) of a soup on prepared inputs."""
        self.load(weights)
        return self.logits(inputs).argmax(1) == labels.to(self.device)

    def accuracy(self, weights, inputs: torch.Tensor, labels: torch.Tensor) -> float:
        correct = self.correct(weights, inputs, labels)
        return int(correct.sum()) / len(correct)


# --- selection over a score table -------------------------------------------------------------


def best_index(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the first (grids list interpolations first)."""
    best = max(scores)
    return next(i for i, s in enumerate(scores) if s == best)


def grid_search(scorer: SoupScorer, grid: Sequence[Mapping[str, float]], inputs, labels) -> Selection:
    """Score every soup of ``grid`` on the adaptation images; pick the most accurate."""
    start = scorer.forward_passes
    scores = [scorer.accuracy(w, inputs, labels) for w in grid]
    i = best_index(scores)
    return Selection("grid", dict(grid[i]), scores[i], scorer.forward_passes - start, {"scores": scores})


def successive_halving(
    scorer: SoupScorer, grid: Sequence[Mapping[str, float]], inputs, labels, first_images: int = 16, keep: float = 1 / 3
) -> Selection:
    """Score all soups on ``first_images`` images, keep the best ``keep`` fraction, grow the
    images by 1/keep, until one soup is left or all images are used (Jamieson & Talwalkar 2016).
    Images are taken as a prefix of the adaptation set (stratified by construction)."""
    if not 0 < keep < 1:
        raise ValueError(f"keep must be in (0, 1), got {keep}")
    start = scorer.forward_passes
    alive = list(range(len(grid)))
    n = min(first_images, len(labels))
    rounds = []
    while True:
        scores = {i: scorer.accuracy(grid[i], inputs[:n], labels[:n]) for i in alive}
        rounds.append({"images": n, "soups": len(alive)})
        if len(alive) == 1 or n >= len(labels):
            break
        ranked = sorted(alive, key=lambda i: (-scores[i], i))
        alive = ranked[: max(1, math.ceil(len(alive) * keep))]
        n = min(len(labels), math.ceil(n / keep))
    winner = max(alive, key=lambda i: (scores[i], -i))
    return Selection("halving", dict(grid[winner]), scores[winner], scorer.forward_passes - start, {"rounds": rounds})


def greedy_soup(scorer: SoupScorer, inputs, labels) -> Selection:
    """Model-soups' greedy soup over the scorer's base models.

    Ingredients are sorted by their own adaptation accuracy; each is added to
    the uniform average if that strictly improves adaptation accuracy.
    """
    start = scorer.forward_passes
    names = scorer.names
    own = {n: scorer.accuracy({n: 1.0}, inputs, labels) for n in names}
    order = sorted(names, key=lambda n: -own[n])
    chosen = [order[0]]
    best = own[order[0]]
    for candidate in order[1:]:
        trial = chosen + [candidate]
        accuracy = scorer.accuracy({n: 1.0 / len(trial) for n in trial}, inputs, labels)
        if accuracy > best:
            chosen, best = trial, accuracy
    weights = {n: 1.0 / len(chosen) for n in chosen}
    return Selection("greedy", weights, best, scorer.forward_passes - start, {"order": order})


LEARNED_INITS = ("best_base", "uniform")


def learned_soup(
    scorer: SoupScorer,
    inputs,
    labels,
    steps: int = 50,
    lr: float = 0.05,
    init: Mapping[str, float] | str = "best_base",
    batch_size: int = 256,
    seed: int = 0,
    check_every: int = 10,
) -> Selection:
    """Learn the mixing weights by gradient descent on the adaptation cross-entropy.

    The weights live on the affine plane Σw = 1 (so extrapolation is
    allowed): w = u − (Σu − 1)/k for free parameters u. They start at
    ``init``: ``"best_base"`` (the base model most accurate on the adaptation
    images), ``"uniform"``, or given weights. Not uniform by default: soups
    are not convex in accuracy, and the uniform soup of a robust parent and a
    far-moved clean fine-tune can sit on a loss barrier (on the digits
    default it scores 15–25 %), from which descent runs into the nearest basin
    rather than the best one.

    Two guards against cross-entropy disagreeing with accuracy: a learned
    temperature takes up the logit scale (else descent drifts towards the most
    confident ingredient), and every ``check_every`` steps the current weights
    are scored on all adaptation images, the best scored weights being
    returned (the start included), so the result is never worse on the
    adaptation images than where it started. BatchNorm runs in eval mode with
    running statistics mixed by the current weights, without gradient
    (native batch_norm is not differentiable in them). Forward passes
    reported: the mini-batches of every step plus every scoring pass.
    """
    from torch.func import functional_call

    names = scorer.names
    k = len(names)
    scored_before = scorer.forward_passes
    if init == "best_base":
        base_scores = [scorer.accuracy({n: 1.0}, inputs, labels) for n in names]
        best_base = max(range(k), key=lambda i: base_scores[i])
        start_w = [1.0 if i == best_base else 0.0 for i in range(k)]
    elif init == "uniform":
        start_w = [1.0 / k] * k
    elif isinstance(init, Mapping):
        start_w = [float(init.get(n, 0.0)) for n in names]
    else:
        raise ValueError(f"learned soup init {init!r}: expected one of {LEARNED_INITS} or a weights mapping")
    u = torch.tensor(start_w, dtype=torch.float32, device=scorer.device, requires_grad=True)
    log_temperature = torch.zeros((), device=scorer.device, requires_grad=True)
    optimizer = torch.optim.Adam([u, log_temperature], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    labels = labels.to(scorer.device)

    def on_plane(raw: torch.Tensor) -> torch.Tensor:
        return raw - (raw.sum() - 1.0) / k

    def current() -> dict[str, float]:
        return dict(zip(names, on_plane(u).detach().cpu().tolist()))

    best_weights = current()
    best_accuracy, best_step = scorer.accuracy(best_weights, inputs, labels), 0
    trained = 0
    for step in range(1, steps + 1):
        idx = torch.randperm(len(labels), generator=generator)[:batch_size].to(scorer.device)
        w = on_plane(u)
        tensors = scorer.stack.mix(w)
        logits = functional_call(scorer.net, tensors, (inputs[idx],))
        loss = F.cross_entropy(logits.float() * log_temperature.exp(), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trained += len(idx)
        if step % check_every == 0 or step == steps:
            weights = current()
            accuracy = scorer.accuracy(weights, inputs, labels)
            if accuracy > best_accuracy:
                best_weights, best_accuracy, best_step = weights, accuracy, step
    scorer.forward_passes += trained
    details = {"steps": steps, "lr": lr, "init": init if isinstance(init, str) else dict(init), "best_step": best_step}
    return Selection("learned", best_weights, best_accuracy, scorer.forward_passes - scored_before, details)


@torch.no_grad()
def ensemble_correct(
    models: Sequence[nn.Module], images: torch.Tensor, labels: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """Per-point correctness of an output ensemble (mean of softmax probabilities).

    An ensemble of k networks costs k× the FLOPs of one; a soup costs 1×.
    """
    correct = []
    for start in range(0, len(labels), batch_size):
        x = (
            images[start : start + batch_size].float() / 255.0
            if images.dtype == torch.uint8
            else images[start : start + batch_size]
        )
        probs = torch.stack([m.eval()(x).softmax(1) for m in models]).mean(0)
        correct.append(probs.argmax(1) == labels[start : start + batch_size])
    return torch.cat(correct)


SELECTION_METHODS = {
    "grid": grid_search,
    "halving": successive_halving,
    "greedy": greedy_soup,
    "learned": learned_soup,
}


def simplex_grid(k: int, step: float, extend: float = 0.0) -> list[tuple[float, ...]]:
    """Weight vectors of ``k`` models on a lattice of spacing ``step`` with Σw = 1.

    With ``extend`` = 0 this is the simplex (all w ≥ 0); ``extend`` = e lets
    every weight go down to −e (extrapolation outside the simplex, weights
    then reach up to 1 + (k−1)·e). For k = 4 and step 0.1 the simplex has
    286 points (the soups paper's grid).
    """
    if step <= 0:
        raise ValueError(f"step must be positive, got {step}")
    units = int(round(1 / step))
    if abs(units * step - 1) > 1e-9:
        raise ValueError(f"step {step} must divide 1 (e.g. 0.1, 0.05, 0.25)")
    low = -int(round(extend / step))
    total = units

    def compositions(parts: int, remaining: int):
        if parts == 1:
            if low <= remaining:
                yield (remaining,)
            return
        for first in range(remaining - low * (parts - 1), low - 1, -1):
            for rest in compositions(parts - 1, remaining - first):
                yield (first, *rest)

    return [tuple(round(c * step, 6) for c in combo) for combo in compositions(k, total)]
