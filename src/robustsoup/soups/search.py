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

Label-free methods (:data:`LABEL_FREE_METHODS`) score the same grid from the
shift's adaptation images *without their labels*, one forward pass per soup
shared by all of them (:func:`soup_statistics`):

* ``entropy`` — lowest mean prediction entropy (Tent's objective);
* ``agreement`` — most agreement with the output ensemble of the base models;
* ``bn_distance`` — smallest distance between the shift's feature statistics
  and the soup's BatchNorm running statistics;
* ``infomax`` — SHOT's information maximization: confident *and* diverse
  predictions.

:func:`robustsoup.soups.choice.pick_disagreement` is their safety signal: how often the other
label-free picks predict differently (median over them); above a threshold a pick is not
trusted to beat the best base model and the pipeline falls back to it.

Each returns a :class:`Selection` that counts its soup × image forward passes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..data.imagenet import restrict_logits
from ..data.scoring import ARGMAX, Scoring
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


def label_space(logits: torch.Tensor, scoring: Scoring = ARGMAX) -> torch.Tensor:
    """Logits over the data set's labels under ``scoring``: the 200 classes of a ``subset`` set
    (ImageNet-R, -A), log category probabilities of ``categories`` (cue-conflict), else unchanged
    (ImageNet classes, ReaL's included). What selection's cross-entropy and label-free statistics
    read, so they rank soups in the label space that scores them."""
    if scoring.kind == "subset":
        return restrict_logits(logits, scoring.table)
    if scoring.kind == "categories":
        return scoring.category_scores(logits).clamp_min(1e-12).log()
    return logits


def _head(targets: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The first ``n`` rows of a split's label sets (None stays None)."""
    return None if targets is None else targets[:n]


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
        memo: bool = False,
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
        self.memo = memo
        self._loaded: tuple[float, ...] | None = None  # the weight vector in the model's tensors
        self._memo_base: torch.Tensor | None = None  # the tensor the memo's inputs are views of
        self._memo: dict[tuple, torch.Tensor] = {}

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
        return torch.as_tensor(list(weights), dtype=torch.float32).to(self.device)

    @torch.no_grad()
    def load(self, weights: Mapping[str, float] | Sequence[float]) -> None:
        """Overwrite the model's tensors with the soup (running variances floored as in
        :func:`robustsoup.weights.affine_combination`)."""
        vector = self._weight_vector(weights)
        mixed = self.stack.mix(vector)
        for key, target in self.targets.items():
            target.copy_(mixed[key])
        self._loaded = tuple(vector.tolist())

    @torch.no_grad()
    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits of the loaded soup on prepared inputs (counts the forward passes); always a real
        forward pass (forward hooks see it), remembered for :meth:`correct` when the memo is on."""
        out = []
        with self.arithmetic.autocast(self.device):
            for start in range(0, len(inputs), self.batch_size):
                out.append(self.net(inputs[start : start + self.batch_size]).float())
        self.forward_passes += len(inputs)
        logits = torch.cat(out)
        if self.memo and self._loaded is not None:
            self._memo[self._memo_key(self._loaded, inputs)] = logits
        return logits

    def _memo_key(self, vector: tuple[float, ...], inputs: torch.Tensor) -> tuple:
        """The memo's key of a soup's weight vector on ``inputs``, a view of one prepared tensor: where
        the view starts and its shape and strides (the same images batched alike: the same forward
        pass). A view of another tensor empties the memo first, which holds only the latest tensor's
        logits (and keeps that tensor alive, so that its memory is not reused under the same address)."""
        base = inputs._base if inputs._base is not None else inputs
        if self._memo_base is not base:
            self._memo.clear()
            self._memo_base = base
        return (vector, inputs.data_ptr(), tuple(inputs.shape), inputs.stride(), inputs.dtype)

    def correct(
        self, weights, inputs: torch.Tensor, labels: torch.Tensor, scoring: Scoring = ARGMAX, targets=None
    ) -> torch.Tensor:
        """Per-point correctness (bool) of a soup on prepared inputs, under the data set's ``scoring``
        (:mod:`robustsoup.data.scoring`; ``targets``: the label sets it may read).

        With ``memo`` on, a soup already passed over the same inputs is answered from the logits that
        pass gave (the same forward pass, so the same logits); the pass still counts in
        :attr:`forward_passes`, which is what each method costs on its own."""
        if self.memo:
            remembered = self._memo.get(self._memo_key(tuple(self._weight_vector(weights).tolist()), inputs))
            if remembered is not None:
                self.forward_passes += len(inputs)
                return scoring.correct(remembered, labels.to(self.device), targets)
        self.load(weights)
        return scoring.correct(self.logits(inputs), labels.to(self.device), targets)

    def accuracy(
        self, weights, inputs: torch.Tensor, labels: torch.Tensor, scoring: Scoring = ARGMAX, targets=None
    ) -> float:
        """Fraction of ``inputs`` a soup gets right under ``scoring`` (as :meth:`correct`)."""
        correct = self.correct(weights, inputs, labels, scoring, _head(targets, len(labels)))
        return int(correct.sum()) / len(correct)


# --- selection over a score table -------------------------------------------------------------


def best_index(scores: Sequence[float]) -> int:
    """Index of the highest score; ties go to the first (grids list interpolations first)."""
    best = max(scores)
    return next(i for i, s in enumerate(scores) if s == best)


def grid_search(
    scorer: SoupScorer, grid: Sequence[Mapping[str, float]], inputs, labels, scoring: Scoring = ARGMAX, targets=None
) -> Selection:
    """Score every soup of ``grid`` on the adaptation images (under the set's ``scoring``); pick the
    most accurate."""
    start = scorer.forward_passes
    scores = [scorer.accuracy(w, inputs, labels, scoring, targets) for w in grid]
    i = best_index(scores)
    return Selection("grid", dict(grid[i]), scores[i], scorer.forward_passes - start, {"scores": scores})


def successive_halving(
    scorer: SoupScorer,
    grid: Sequence[Mapping[str, float]],
    inputs,
    labels,
    first_images: int = 16,
    keep: float = 1 / 3,
    scoring: Scoring = ARGMAX,
    targets=None,
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
        scores = {i: scorer.accuracy(grid[i], inputs[:n], labels[:n], scoring, _head(targets, n)) for i in alive}
        rounds.append({"images": n, "soups": len(alive)})
        if len(alive) == 1 or n >= len(labels):
            break
        ranked = sorted(alive, key=lambda i: (-scores[i], i))
        alive = ranked[: max(1, math.ceil(len(alive) * keep))]
        n = min(len(labels), math.ceil(n / keep))
    winner = max(alive, key=lambda i: (scores[i], -i))
    return Selection("halving", dict(grid[winner]), scores[winner], scorer.forward_passes - start, {"rounds": rounds})


def greedy_soup(scorer: SoupScorer, inputs, labels, scoring: Scoring = ARGMAX, targets=None) -> Selection:
    """Model-soups' greedy soup over the scorer's base models.

    Ingredients are sorted by their own adaptation accuracy; each is added to
    the uniform average if that strictly improves adaptation accuracy.
    """
    start = scorer.forward_passes
    names = scorer.names
    own = {n: scorer.accuracy({n: 1.0}, inputs, labels, scoring, targets) for n in names}
    order = sorted(names, key=lambda n: -own[n])
    chosen = [order[0]]
    best = own[order[0]]
    for candidate in order[1:]:
        trial = chosen + [candidate]
        accuracy = scorer.accuracy({n: 1.0 / len(trial) for n in trial}, inputs, labels, scoring, targets)
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
    scoring: Scoring = ARGMAX,
    targets=None,
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
    reported: the mini-batches of every step plus every scoring pass. The
    cross-entropy is taken over the set's label space (:func:`label_space`
    of ``scoring``), accuracy under ``scoring``.
    """
    names = scorer.names
    k = len(names)
    scored_before = scorer.forward_passes
    if init == "best_base":
        base_scores = [scorer.accuracy({n: 1.0}, inputs, labels, scoring, targets) for n in names]
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
    best_accuracy, best_step = scorer.accuracy(best_weights, inputs, labels, scoring, targets), 0
    trained = 0
    for step in range(1, steps + 1):
        idx = torch.randperm(len(labels), generator=generator)[:batch_size].to(scorer.device)
        w = on_plane(u)
        tensors = scorer.stack.mix(w)
        logits = functional_call(scorer.net, tensors, (inputs[idx],))
        loss = F.cross_entropy(label_space(logits.float(), scoring) * log_temperature.exp(), labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        trained += len(idx)
        if step % check_every == 0 or step == steps:
            weights = current()
            accuracy = scorer.accuracy(weights, inputs, labels, scoring, targets)
            if accuracy > best_accuracy:
                best_weights, best_accuracy, best_step = weights, accuracy, step
    scorer.forward_passes += trained
    details = {"steps": steps, "lr": lr, "init": init if isinstance(init, str) else dict(init), "best_step": best_step}
    return Selection("learned", best_weights, best_accuracy, scorer.forward_passes - scored_before, details)


@torch.no_grad()
def ensemble_correct(
    models: Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int = 512,
    scoring: Scoring = ARGMAX,
    targets: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-point correctness of an output ensemble (mean of softmax probabilities), under ``scoring``.

    The scoring reads log(mean probability) as the ensemble's logits (its
    softmax is the mean probability). An ensemble of k networks costs k× the
    FLOPs of one; a soup costs 1×.
    """
    correct = []
    for start in range(0, len(labels), batch_size):
        x = (
            images[start : start + batch_size].float() / 255.0
            if images.dtype == torch.uint8
            else images[start : start + batch_size]
        )
        probs = torch.stack([m.eval()(x).softmax(1) for m in models]).mean(0)
        rows = None if targets is None else targets[start : start + batch_size]
        correct.append(scoring.correct(probs.log(), labels[start : start + batch_size], rows))
    return torch.cat(correct)


LABELLED_METHODS = {
    "grid": grid_search,
    "halving": successive_halving,
    "greedy": greedy_soup,
    "learned": learned_soup,
}

# --- label-free selection ---------------------------------------------------------------------


def batchnorm_layers(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The network's BatchNorm layers (any dimension) that keep running statistics, in module order."""
    return [
        m
        for m in net.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats and m.running_var is not None
    ]


def gaussian_kl(mean_p: torch.Tensor, var_p: torch.Tensor, mean_q: torch.Tensor, var_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mean_p, var_p) ‖ N(mean_q, var_q)) per channel (nats)."""
    return 0.5 * (torch.log(var_q / var_p) + (var_p + (mean_p - mean_q) ** 2) / var_q - 1.0)


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * probs.clamp_min(1e-12).log()).sum(-1)


def _is_corner(weights: Mapping[str, float], name: str) -> bool:
    return all(abs(float(w) - (1.0 if n == name else 0.0)) < 1e-9 for n, w in weights.items())


@dataclass
class SoupStatistics:
    """What the label-free methods read of every soup of a grid on unlabelled images.

    ``table`` holds one list per statistic, one value per soup (in grid
    order): ``entropy`` (mean prediction entropy, nats), ``marginal_entropy``
    (entropy of the mean prediction), ``agreement`` (fraction of images on
    which the soup predicts the class the output ensemble of the base models
    predicts), ``bn_distance`` (mean over BatchNorm layers and channels of
    KL(shift's feature statistics ‖ the soup's running statistics); NaN
    without BatchNorm) and, only when labels were given, ``accuracy`` (a
    diagnostic, never used to choose). ``predictions`` is (soups, images),
    for the safety signal. ``soup_passes`` = soups × images;
    ``ensemble_passes`` = the extra base-model passes the ensemble needed (0
    when the base models are corners of the grid, as on a simplex).
    """

    table: dict[str, list[float]]
    predictions: torch.Tensor
    images: int
    soup_passes: int
    ensemble_passes: int


@torch.no_grad()
def soup_statistics(
    scorer: SoupScorer,
    grid: Sequence[Mapping[str, float]],
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    batchnorm: bool = True,
    scoring: Scoring = ARGMAX,
    targets: torch.Tensor | None = None,
) -> SoupStatistics:
    """One forward pass of every soup of ``grid`` over the prepared, unlabelled ``inputs``.

    BatchNorm inputs are summed per channel by forward hooks during the same
    pass (``batchnorm``: False skips them); the output ensemble is the mean of
    the base models' softmax probabilities, taken from the grid's corners
    when they are in it. Probabilities and predictions are over the set's
    labels (:func:`label_space` of ``scoring``); the ``accuracy`` diagnostic
    is scored under ``scoring``.
    """
    if len(inputs) == 0:
        raise ValueError("label-free selection needs at least one image; found none")
    start = scorer.forward_passes
    layers = batchnorm_layers(scorer.net) if batchnorm else []
    moments: dict[nn.Module, tuple[int, torch.Tensor, torch.Tensor]] = {}

    def collect(module: nn.Module, args, _output) -> None:
        """Per-channel count, mean and sum of squared deviations of the layer's input, merged over
        batches (Chan et al.'s pairwise update, float64 per channel; no float64 copy of the input). Within a
        batch two passes in float32, the mean and then the squared deviations from it: as accurate as
        ``torch.var_mean`` (≤ 1.6e-7 relative against float64, measured) and 4× faster on a CPU, where var_mean's
        one-pass kernel cost as much as the forward pass it listens to."""
        x = args[0].detach().float()
        dims = [d for d in range(x.dim()) if d != 1]
        mean_b = x.mean(dims, keepdim=True)
        var_b = (x - mean_b).square_().mean(dims)
        n_b = x.numel() // x.shape[1]
        mean_b, m2_b = mean_b.flatten().double(), var_b.double() * n_b
        if module not in moments:
            moments[module] = (n_b, mean_b, m2_b)
            return
        n_a, mean_a, m2_a = moments[module]
        n = n_a + n_b
        delta = mean_b - mean_a
        moments[module] = (n, mean_a + delta * n_b / n, m2_a + m2_b + delta**2 * n_a * n_b / n)

    handles = [layer.register_forward_hook(collect) for layer in layers]
    corner_probs: dict[str, torch.Tensor] = {}
    table: dict[str, list[float]] = {"entropy": [], "marginal_entropy": [], "bn_distance": []}
    predictions = []
    if labels is not None:
        table["accuracy"] = []
        labels = labels.to(scorer.device)
    try:
        for weights in grid:
            moments.clear()
            scorer.load(weights)
            logits = scorer.logits(inputs)
            probs = label_space(logits, scoring).softmax(1)
            table["entropy"].append(float(_entropy(probs).mean()))
            table["marginal_entropy"].append(float(_entropy(probs.mean(0))))
            predictions.append(probs.argmax(1))
            if labels is not None:
                table["accuracy"].append(float(scoring.correct(logits, labels, targets).float().mean()))
            for name in scorer.names:
                if name not in corner_probs and _is_corner(weights, name):
                    corner_probs[name] = probs
            distances = []
            for layer in layers:
                count, mean, m2 = moments[layer]
                var = m2 / count + layer.eps
                running_var = layer.running_var.to(torch.float64) + layer.eps
                distances.append(gaussian_kl(mean, var, layer.running_mean.to(torch.float64), running_var).mean())
            table["bn_distance"].append(float(torch.stack(distances).mean()) if distances else math.nan)
    finally:
        for handle in handles:
            handle.remove()
    soup_passes = scorer.forward_passes - start
    for name in scorer.names:
        if name not in corner_probs:  # a grid without this base model: one more pass for the ensemble
            scorer.load({name: 1.0})
            corner_probs[name] = label_space(scorer.logits(inputs), scoring).softmax(1)
    ensemble = torch.stack([corner_probs[n] for n in scorer.names]).mean(0).argmax(1)
    stacked = torch.stack(predictions)
    table["agreement"] = (stacked == ensemble).double().mean(1).tolist()
    return SoupStatistics(table, stacked.cpu(), len(inputs), soup_passes, scorer.forward_passes - start - soup_passes)


@dataclass(frozen=True)
class LabelFreeMethod:
    """A label-free selection rule: a score per soup (higher is better) from a statistics table."""

    name: str
    score: Callable[[Mapping[str, Sequence[float]]], list[float]]
    reference: str
    uses_ensemble: bool = False
    needs_batchnorm: bool = False

    def passes(self, statistics: SoupStatistics) -> int:
        """Soup × image forward passes this method needs alone."""
        return statistics.soup_passes + (statistics.ensemble_passes if self.uses_ensemble else 0)


LABEL_FREE_METHODS: dict[str, LabelFreeMethod] = {
    m.name: m
    for m in (
        LabelFreeMethod(
            "entropy",
            lambda t: [-float(v) for v in t["entropy"]],
            "Wang et al., Tent: Fully Test-Time Adaptation by Entropy Minimization, ICLR 2021 (the mean "
            "prediction entropy they minimize, used here to rank soups; lower is better)",
        ),
        LabelFreeMethod(
            "agreement",
            lambda t: [float(v) for v in t["agreement"]],
            "the output ensemble's predictions as pseudo-labels; agreement as an estimate of accuracy: Jiang et al., "
            "Assessing Generalization of SGD via Disagreement, ICLR 2022; Baek et al., Agreement-on-the-Line, "
            "NeurIPS 2022",
            uses_ensemble=True,
        ),
        LabelFreeMethod(
            "bn_distance",
            lambda t: [-float(v) for v in t["bn_distance"]],
            "distance between a batch's feature statistics and the BatchNorm running statistics, as in "
            "Yin et al., DeepInversion, CVPR 2020 (their ℓ2 feature-statistics term) and Schneider et al., "
            "Improving robustness against common corruptions by covariate shift adaptation, NeurIPS 2020; here "
            "the per-channel Gaussian KL, scale-free across layers (lower is better)",
            needs_batchnorm=True,
        ),
        LabelFreeMethod(
            "infomax",
            lambda t: [float(m) - float(e) for m, e in zip(t["marginal_entropy"], t["entropy"])],
            "Liang et al., Do We Really Need to Access the Source Data? Source Hypothesis Transfer for "
            "Unsupervised Domain Adaptation (SHOT), ICML 2020, Sec. 3.2: information maximization, "
            "entropy of the mean prediction minus mean prediction entropy (higher is better)",
        ),
    )
}


def select_from_table(
    method: str,
    grid: Sequence[Mapping[str, float]],
    table: Mapping[str, Sequence[float]],
    forward_passes: int = 0,
) -> Selection:
    """The soup of ``grid`` with the highest score of label-free ``method`` on a statistics table.

    ``adaptation_accuracy`` is the chosen soup's ``accuracy`` entry when the
    table has one (labels seen only for this diagnostic), else NaN.
    """
    if method not in LABEL_FREE_METHODS:
        raise ValueError(f"unknown label-free method {method!r}; expected one of {sorted(LABEL_FREE_METHODS)}")
    rule = LABEL_FREE_METHODS[method]
    scores = rule.score(table)
    if len(scores) != len(grid):
        raise ValueError(f"{method}: {len(scores)} scores for a grid of {len(grid)} soups")
    if any(math.isnan(s) for s in scores):
        raise ValueError(
            f"{method}: some soups have no score (NaN)"
            + ("; the network has no BatchNorm layer to compare statistics with" if rule.needs_batchnorm else "")
        )
    i = best_index(scores)
    accuracy = float(table["accuracy"][i]) if "accuracy" in table else math.nan
    details = {"scores": scores, "score": scores[i], "index": i, "reference": rule.reference}
    return Selection(method, dict(grid[i]), accuracy, forward_passes, details)


def label_free_selection(
    method: str,
    scorer: SoupScorer,
    grid: Sequence[Mapping[str, float]],
    inputs: torch.Tensor,
    labels: torch.Tensor | None = None,
    statistics: SoupStatistics | None = None,
    scoring: Scoring = ARGMAX,
    targets: torch.Tensor | None = None,
) -> Selection:
    """Choose a soup of ``grid`` by label-free ``method`` from the unlabelled ``inputs``.

    ``statistics`` (from :func:`soup_statistics` on the same grid and inputs)
    lets several methods share one pass; the forward passes reported are the
    ones the method needs alone. ``labels``, if given, only fill the
    diagnostic ``adaptation_accuracy``.
    """
    if method not in LABEL_FREE_METHODS:
        raise ValueError(f"unknown label-free method {method!r}; expected one of {sorted(LABEL_FREE_METHODS)}")
    rule = LABEL_FREE_METHODS[method]
    if rule.needs_batchnorm and not batchnorm_layers(scorer.net):
        raise ValueError(
            f"{method} compares BatchNorm running statistics, but the network "
            f"({type(scorer.net).__name__}) has no BatchNorm layer; choose another method"
        )
    if statistics is None:
        statistics = soup_statistics(
            scorer, grid, inputs, labels, batchnorm=rule.needs_batchnorm, scoring=scoring, targets=targets
        )
    return select_from_table(method, grid, statistics.table, rule.passes(statistics))


def _label_free_entry(method: str) -> Callable[..., Selection]:
    def select(scorer, grid, inputs, labels=None, statistics=None, scoring=ARGMAX, targets=None) -> Selection:
        return label_free_selection(method, scorer, grid, inputs, labels, statistics, scoring, targets)

    select.__name__ = f"{method}_selection"
    select.__doc__ = f"Label-free selection by {method}: {LABEL_FREE_METHODS[method].reference}."
    return select


SELECTION_METHODS = {**LABELLED_METHODS, **{m: _label_free_entry(m) for m in LABEL_FREE_METHODS}}
