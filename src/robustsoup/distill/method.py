"""Robust distillation into a multi-head student (Jain et al. 2023, "Efficiently Robustify Pre-trained Models").

A small teacher made robust with augmentation (AugMix and/or synthetic
corruptions, :class:`AugmentInputs`) transfers its robustness to a larger
student, of which only the last block(s) and three heads are tuned
(:class:`robustsoup.models.multihead.MultiHeadNet`):

- *clean* head: cross-entropy plus temperature-scaled KL to the original
  student's predictions, on clean images;
- *robust* head: cross-entropy plus temperature-scaled KL to the teacher, on
  shifted (augmented) images;
- *combined* head: both, half each.

Loss of a head on a batch: ``ce_weight · CE(y) + kd_weight · τ² · KL(p_target^τ ‖ p_head^τ)``;
the total is ``Σ head_weights[h] · loss_h``. Each batch holds clean and
shifted images (the augmentation's ``clean_fraction``), the same stream the
fine-tuning baseline sees. The frozen layers stay in eval mode, BatchNorm
statistics included, so they are bit-identical afterwards; the tuned blocks'
BatchNorm layers normalise with batch statistics (``batchnorm="train"``, the
default: in eval mode the small weights of a BatchNorm-trained network make
SGD diverge) or keep the student's (``"frozen"``). Dropout acts on the
features in front of every head.

At test time each input gets one head (:func:`select_heads`). The signals
(:func:`head_signals`): every head's logits with dropout off; the MC-dropout
uncertainty of every head from ``T`` dropout samples (predictive entropy
normalised by log K, the mean variance of the probabilities, or the mutual
information); and the divergence between the clean and robust heads, the
symmetric KL of their MC-mean predictions. The rules:

- ``clean`` / ``robust`` / ``combined``: always that head (ablations);
- ``oracle``: the first head, in that order, that is correct (an upper bound; needs the labels);
- ``ours``: the clean head when its uncertainty is at most ``θ_u`` *and* the
  heads' divergence is at most ``θ_kl`` (the input looks like clean data and
  the heads agree); otherwise the less uncertain of the robust and combined heads.

``θ_u`` and ``θ_kl`` are chosen on the adaptation split (clean and corrupted)
by :func:`calibrate_thresholds`: a grid of quantiles of the observed values
(plus "never" and "always"), maximising ``clean_weight · clean accuracy +
(1 − clean_weight) · corrupted accuracy`` among the thresholds whose clean
accuracy is at most ``max_clean_drop`` below the clean head's. Ties go to the
larger thresholds (more inputs to the clean head). The paper publishes none
of these constants; the defaults are in the config schema (``distill``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageSplit
from ..data.loading import BatchSource
from ..device import PRECISIONS, Arithmetic, resolve_precision
from ..models import Normalized
from ..models.multihead import HEADS, MultiHeadNet
from ..train.distributed import Distributed, current
from ..train.loop import BatchStep, run_epochs
from ..train.policies import CorruptionInputs

log = logging.getLogger(__name__)

AUGMENTATIONS = ("augmix", "corruptions", "augmix+corruptions")
RULES = ("clean", "robust", "combined", "oracle", "ours")
UNCERTAINTIES = ("entropy", "variance", "mutual_information")
_CLEAN, _ROBUST, _COMBINED = (HEADS.index(h) for h in ("clean", "robust", "combined"))


# ----------------------------------------------------------------------------- shifted inputs


@dataclass
class AugmentInputs:
    """Shifted copies of a batch, per image: AugMix, a synthetic corruption, or (a fraction) clean.

    ``kind`` ``augmix`` uses torchvision's AugMix without the operations that
    overlap the -C corruptions (``all_ops=False``, as the AugMix paper);
    ``corruptions`` draws a corruption and severity per image from
    ``corruptions`` × ``severities`` (:class:`robustsoup.train.CorruptionInputs`);
    ``augmix+corruptions`` gives each shifted image one of the two with equal
    probability. An input policy of :func:`robustsoup.train.train_model`
    (seeded, resumable); the model argument is ignored. ``last_shifted``
    (bool, N) says which images of the last batch were shifted.
    """

    kind: str
    corruptions: Sequence[str] = ()
    severities: Sequence[int] = (1, 2, 3, 4, 5)
    clean_fraction: float = 0.0
    augmix_severity: int = 3
    seed: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        if self.kind not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.kind!r}; expected one of {AUGMENTATIONS}")
        if not 0 <= self.clean_fraction < 1:
            raise ValueError(f"clean_fraction must be in [0, 1), found {self.clean_fraction}")
        if not 1 <= self.augmix_severity <= 10:
            raise ValueError(f"augmix_severity must be in 1..10, found {self.augmix_severity}")
        self.uses_augmix = "augmix" in self.kind
        self.uses_corruptions = "corruptions" in self.kind
        self.corrupt = (
            CorruptionInputs(list(self.corruptions), list(self.severities), 0.0, self.seed)
            if self.uses_corruptions
            else None
        )
        if self.uses_augmix:
            from torchvision.transforms import AugMix

            self.augmix = AugMix(severity=self.augmix_severity, all_ops=False)
        self.generator = torch.Generator().manual_seed(self.seed + 3)
        parts = (["augmix"] if self.uses_augmix else []) + ([self.corrupt.name] if self.corrupt else [])
        self.name = " | ".join(parts) + (f", {self.clean_fraction:g} clean" if self.clean_fraction else "")

    def __call__(self, model: nn.Module | None, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        n = len(x)
        clean = torch.rand(n, generator=self.generator) < self.clean_fraction
        if self.uses_augmix and self.uses_corruptions:
            augmix = torch.rand(n, generator=self.generator) < 0.5
        else:
            augmix = torch.full((n,), self.uses_augmix)
        self.last_shifted = ~clean
        seed = int(torch.randint(2**62, (1,), generator=self.generator))
        images = (x.detach().cpu() * 255).round().to(torch.uint8)
        out = images.clone()
        chosen = (~clean & augmix).nonzero().flatten()
        if len(chosen):
            with torch.random.fork_rng(devices=[]):  # AugMix draws from torch's global generator
                torch.manual_seed(seed)
                for i in chosen.tolist():
                    out[i] = self.augmix(images[i])
        chosen = (~clean & ~augmix).nonzero().flatten()
        if len(chosen):
            shifted = self.corrupt(None, images[chosen].float().div_(255.0), None)
            out[chosen] = (shifted * 255).round().to(torch.uint8)
        return out.to(x.device).float().div_(255.0)

    def offset_seed(self, offset: int) -> None:
        """Draw from streams seeded ``seed + offset`` (a data-parallel rank's own, so the ranks' shards are not
        shifted alike; :class:`robustsoup.train.distributed.RankPolicy` calls it for every rank but 0)."""
        self.seed += offset
        self.generator.manual_seed(self.seed + 3)
        if self.corrupt is not None:
            self.corrupt.seed += offset
            self.corrupt.generator.manual_seed(self.corrupt.seed + 2)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "corrupt": self.corrupt.state_dict() if self.corrupt else {}}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        if self.corrupt:
            self.corrupt.load_state_dict(state["corrupt"])


def make_augmentation(spec: Mapping, seed: int) -> AugmentInputs:
    """The policy of a config's ``distill.augmentation`` section."""
    return AugmentInputs(
        spec["kind"], spec["corruptions"], spec["severities"], spec["clean_fraction"], spec["augmix_severity"], seed
    )


# ----------------------------------------------------------------------------- the multi-head student


def multihead_net(model: Normalized) -> MultiHeadNet:
    net = getattr(model, "net", None)
    if not isinstance(net, MultiHeadNet):
        raise TypeError(f"expected a multi-head student (architecture multihead), found {type(net).__name__}")
    return net


def multihead_state_from_student(
    student_state: Mapping[str, torch.Tensor], net: MultiHeadNet, prefix: str = "net."
) -> dict[str, torch.Tensor]:
    """The multi-head student's state dict from the original student's: the base as it is, every head
    a copy of the original classifier."""
    classifier = prefix + net.classifier_name + "."
    state = {}
    for key, tensor in student_state.items():
        if key.startswith(classifier):
            for head in HEADS:
                state[f"{prefix}heads.{head}.{key[len(classifier) :]}"] = tensor.clone()
        elif key.startswith(prefix):
            state[f"{prefix}base.{key[len(prefix) :]}"] = tensor.clone()
        else:
            state[key] = tensor.clone()
    return state


def freeze_for_distillation(model: Normalized) -> list[str]:
    """Freeze every parameter except the multi-head net's trainable ones; return the names (model-level)."""
    net = multihead_net(model)
    tuned = set(net.trainable_names())
    names = []
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(name in tuned)
        if name in tuned:
            names.append(f"net.{name}")
    return names


def set_distillation_mode(model: Normalized, batchnorm: str = "train") -> None:
    """Eval mode everywhere (frozen BatchNorm statistics), except, with ``batchnorm="train"``, the tuned
    blocks, whose BatchNorm layers then normalise with batch statistics and update their running ones."""
    net = multihead_net(model)
    model.eval()
    if batchnorm == "train":
        for name in net.trainable_modules:
            net.get_submodule(name).train()


def _normalize(model: Normalized, x: torch.Tensor) -> torch.Tensor:
    return (x - model.mean) / model.std


# ----------------------------------------------------------------------------- losses and the loop


@dataclass
class DistillSettings:
    """Optimisation and loss settings of the distillation (config ``distill.distillation``)."""

    epochs: int
    lr: float
    schedule: str = "cosine"
    batch_size: int = 32
    momentum: float = 0.9
    weight_decay: float = 5e-4
    temperature: float = 4.0
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    head_weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(HEADS, 1.0))
    batchnorm: str = "train"
    seed: int = 0
    precision: str = "float32"  # auto | float32 | bf16 | fp16: autocast of every forward pass (teacher's too)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, found {self.precision!r}")
        if self.batchnorm not in ("train", "frozen"):
            raise ValueError(f"batchnorm must be 'train' or 'frozen', found {self.batchnorm!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive, found {self.temperature}")
        if self.ce_weight < 0 or self.kd_weight < 0 or self.ce_weight + self.kd_weight == 0:
            raise ValueError(
                f"ce_weight and kd_weight must be ≥ 0 and not both 0, found {self.ce_weight} and {self.kd_weight}"
            )
        if set(self.head_weights) != set(HEADS) or any(w < 0 for w in self.head_weights.values()):
            raise ValueError(f"head_weights needs a weight ≥ 0 for each of {HEADS}, found {dict(self.head_weights)}")


def kd_loss(logits: torch.Tensor, target_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """τ² · KL(softmax(target/τ) ‖ softmax(logits/τ)), averaged over the batch (Hinton et al.)."""
    t = temperature
    return (
        F.kl_div(
            F.log_softmax(logits / t, 1), F.log_softmax(target_logits / t, 1), reduction="batchmean", log_target=True
        )
        * t
        * t
    )


def head_losses(
    net: MultiHeadNet,
    features: torch.Tensor,
    y: torch.Tensor,
    shifted: torch.Tensor,
    reference: torch.Tensor,
    teacher: torch.Tensor,
    settings: DistillSettings,
    global_counts: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss of a batch and each head's logits on all of it.

    ``features`` (B, D) of a batch whose images ``shifted`` (bool, B) were
    augmented; ``reference`` (B, K) the original student's logits on the
    clean images (rows of shifted images are ignored); ``teacher`` (S, K) the
    teacher's logits on the shifted images. The clean head learns on the clean
    images, the robust head on the shifted ones, the combined head on both (each
    part weighted by its share of the batch); a head with no image of its kind
    in the batch adds nothing.

    ``global_counts`` (clean, shifted images of the global batch) makes this one
    rank's shard of a data-parallel batch: each part's mean is then over the
    global batch's images of its kind, and the total is scaled by global batch /
    shard, so the loop's loss weighting (shard / global batch, averaged over
    ranks) gives exactly the gradient of the global batch's loss.
    """

    def term(logits, labels, target):
        if len(labels) == 0:
            return logits.sum() * 0.0
        return settings.ce_weight * F.cross_entropy(logits, labels) + settings.kd_weight * kd_loss(
            logits, target, settings.temperature
        )

    clean = ~shifted
    logits = {h: net.head(h, features, dropout=True) for h in HEADS}
    local = (int(clean.sum()), int(shifted.sum()))
    counts = global_counts or local
    batch = counts[0] + counts[1]
    # Each part's share of its kind in the global batch, scaled by global batch / shard (1 in one process).
    f_clean, f_shifted = (mine / total * batch / len(y) if total else 0.0 for mine, total in zip(local, counts))
    share = counts[1] / batch
    losses = {
        "clean": f_clean * term(logits["clean"][clean], y[clean], reference[clean]),
        "robust": f_shifted * term(logits["robust"][shifted], y[shifted], teacher),
        "combined": (1 - share) * f_clean * term(logits["combined"][clean], y[clean], reference[clean])
        + share * f_shifted * term(logits["combined"][shifted], y[shifted], teacher),
    }
    total = sum(settings.head_weights[h] * losses[h] for h in HEADS)
    return total, logits


@torch.no_grad()
def predict_logits(
    model: nn.Module, data: ImageSplit, device, batch_size: int = 500, indices: torch.Tensor | None = None
) -> torch.Tensor:
    """Logits of ``model`` (eval mode) on every image of ``data`` (or those at ``indices``, in order), on the
    CPU (batches from the one batch source, :class:`~robustsoup.data.loading.BatchSource`)."""
    model.eval()
    indices = torch.arange(len(data)) if indices is None else indices
    batches = BatchSource(data, device).batches(indices, batch_size)
    return torch.cat([model(images.float().div_(255.0)).float().cpu() for _idx, images, _y in batches])


@dataclass
class DistillStep(BatchStep):
    """A batch of distillation for :func:`robustsoup.train.loop.run_epochs`.

    The policy shifts part of the batch; the teacher (no gradient) gives the
    robust targets on the shifted images, ``reference_logits`` (indexed by the
    training-split indices) the clean targets; :func:`head_losses` weighs the
    three heads. Only the parameters :func:`freeze_for_distillation` left
    trainable are optimised, with weight decay. History rows get the shifted
    fraction and each head's training accuracy on its own images.
    """

    teacher: nn.Module
    reference_logits: torch.Tensor  # or SharedRows: indexed by a tensor of training-split indices
    settings: DistillSettings
    label: ClassVar[str] = "distill epoch"
    loss_name: ClassVar[str] = "distillation loss"

    def __post_init__(self) -> None:
        self.net = multihead_net(self.model)

    def parameter_groups(self) -> list[dict]:
        tuned = [p for p in self.model.parameters() if p.requires_grad]
        return [{"params": tuned, "weight_decay": self.settings.weight_decay}]

    def begin_epoch(self) -> None:
        self.n_shifted = 0
        self.correct = dict.fromkeys(HEADS, 0)

    def loss(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x_train = self.policy(None, x, y).detach()
        shifted = self.policy.last_shifted.to(self.device)
        with torch.no_grad(), self.arithmetic.autocast(self.device):
            teacher_logits = self.teacher(x_train[shifted]).float()
        set_distillation_mode(self.model, self.settings.batchnorm)
        group = current()
        counts = None  # a rank's shard: the global batch's clean and shifted counts
        if group is not None:
            counts = tuple(int(c) for c in group.all_sum([int((~shifted).sum()), int(shifted.sum())]))
        with self.arithmetic.autocast(self.device):
            features = self.net.features(_normalize(self.model, x_train))
            reference = self.reference_logits[idx].to(self.device)
            loss, logits = head_losses(self.net, features, y, shifted, reference, teacher_logits, self.settings, counts)
        self.n_shifted += int(shifted.sum())
        hits = {h: logits[h].detach().argmax(1) == y for h in HEADS}
        self.correct["clean"] += int(hits["clean"][~shifted].sum())
        self.correct["robust"] += int(hits["robust"][shifted].sum())
        self.correct["combined"] += int(hits["combined"].sum())
        return loss

    def sum_tallies(self, all_sum: Callable[[Sequence[float]], list[float]]) -> None:
        """The shifted count and every head's hits summed over the ranks of a distributed run."""
        total = all_sum([self.n_shifted, *(self.correct[h] for h in HEADS)])
        self.n_shifted = int(total[0])
        self.correct = {h: int(v) for h, v in zip(HEADS, total[1:], strict=True)}

    def epoch_metrics(self, seen: int) -> dict:
        counts = {"clean": seen - self.n_shifted, "robust": self.n_shifted, "combined": seen}
        return {
            "shifted_fraction": self.n_shifted / seen,
            "train_accuracy": {h: self.correct[h] / max(counts[h], 1) for h in HEADS},
        }


def distill_multihead(
    model: Normalized,
    teacher: nn.Module,
    reference_logits: torch.Tensor,
    data: ImageSplit,
    policy,
    settings: DistillSettings,
    device: torch.device,
    *,
    fingerprint: str = "",
    resume_path: str | Path | None = None,
    on_epoch_end: Callable[[int], None] | None = None,
    distributed: Distributed | None = None,
) -> list[dict]:
    """Distil into ``model`` (a multi-head student) in place; one history row per epoch.

    ``reference_logits`` are the original student's logits on every training
    image (the clean head's target); ``teacher`` gives the robust targets on
    ``policy``'s shifted images. Only the parameters that
    :func:`freeze_for_distillation` leaves trainable change; the teacher and
    the frozen layers stay in eval mode (:func:`set_distillation_mode`). The
    epoch loop, resumable per epoch (``resume_path``, ``fingerprint``), is
    :func:`robustsoup.train.loop.run_epochs` with a :class:`DistillStep`;
    ``distributed`` (default: the initialised process group, if any) makes it one
    rank of a data-parallel run (its ``sync_batchnorm`` synchronises the tuned
    blocks' BatchNorm).
    """
    if len(reference_logits) != len(data):
        raise ValueError(f"reference logits for {len(reference_logits)} images, the training split has {len(data)}")
    arithmetic = Arithmetic(resolve_precision(settings.precision, device))
    model.to(device).eval()
    teacher.to(device).eval()
    freeze_for_distillation(model)
    step = DistillStep(
        model, policy, arithmetic, device, teacher=teacher, reference_logits=reference_logits, settings=settings
    )
    return run_epochs(
        step,
        data,
        settings,
        resume_path=resume_path,
        fingerprint=fingerprint,
        on_epoch_end=on_epoch_end,
        distributed=distributed,
    )


# ----------------------------------------------------------------------------- head selection


@dataclass
class HeadSignals:
    """What head selection sees of N inputs.

    ``logits`` (H, N, K): each head with dropout off; ``uncertainty`` (H, N):
    each head's MC-dropout uncertainty; ``divergence`` (N,): symmetric KL
    between the clean and robust heads' MC-mean predictions. Heads in the
    order of :data:`HEADS`.
    """

    logits: torch.Tensor
    uncertainty: torch.Tensor
    divergence: torch.Tensor

    def __len__(self) -> int:
        return int(self.logits.shape[1])

    @staticmethod
    def cat(parts: Sequence[HeadSignals]) -> HeadSignals:
        return HeadSignals(
            torch.cat([p.logits for p in parts], 1),
            torch.cat([p.uncertainty for p in parts], 1),
            torch.cat([p.divergence for p in parts]),
        )


def _uncertainty(samples: torch.Tensor, kind: str) -> torch.Tensor:
    """samples (T, N, K) probabilities → (N,) uncertainty."""
    mean = samples.mean(0)
    k = samples.shape[-1]
    entropy = -(mean * mean.clamp_min(1e-12).log()).sum(-1) / math.log(k)
    if kind == "entropy":
        return entropy
    if kind == "variance":
        return samples.var(0, unbiased=False).mean(-1)
    if kind == "mutual_information":
        expected = -(samples * samples.clamp_min(1e-12).log()).sum(-1).mean(0) / math.log(k)
        return (entropy - expected).clamp_min(0)
    raise ValueError(f"unknown uncertainty {kind!r}; expected one of {UNCERTAINTIES}")


def _symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    lp, lq = p.clamp_min(1e-12).log(), q.clamp_min(1e-12).log()
    return 0.5 * ((p * (lp - lq)).sum(-1) + (q * (lq - lp)).sum(-1))


@torch.no_grad()
def head_signals(
    model: Normalized,
    x: torch.Tensor,
    samples: int = 8,
    seed: int = 0,
    uncertainty: str = "entropy",
    batch_size: int = 500,
    device="cpu",
) -> HeadSignals:
    """Selection signals of images ``x``: see :class:`HeadSignals`.

    ``x`` is [0,1] floats or uint8 images, a tensor or any view that slices into one (a file-list
    split's lazy ``images``: each batch is decoded when it is reached).

    The base runs once per image; the ``samples`` dropout masks act on its
    features, drawn from a generator seeded with ``seed`` on the CPU, so the
    result is the same on every run and device for the same inputs and
    batch size.
    """
    if samples < 1:
        raise ValueError(f"MC-dropout needs at least one sample, found {samples}")
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(f"unknown uncertainty {uncertainty!r}; expected one of {UNCERTAINTIES}")
    net = multihead_net(model)
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    keep = 1.0 - net.dropout
    logits, uncert, divergence = [], [], []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        batch = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch
        features = net.features(_normalize(model, batch.to(device)))
        det, unc, means = [], [], []
        for head in HEADS:
            det.append(net.head(head, features).float().cpu())
            probs = []
            for _ in range(samples):
                mask = (torch.rand(features.shape, generator=generator) < keep).float().div_(keep)
                probs.append(net.head(head, features, mask=mask.to(features.device)).float().softmax(-1).cpu())
            probs = torch.stack(probs)
            unc.append(_uncertainty(probs, uncertainty))
            means.append(probs.mean(0))
        logits.append(torch.stack(det))
        uncert.append(torch.stack(unc))
        divergence.append(_symmetric_kl(means[_CLEAN], means[_ROBUST]))
    return HeadSignals(torch.cat(logits, 1), torch.cat(uncert, 1), torch.cat(divergence))


@dataclass(frozen=True)
class Thresholds:
    """``ours``: the clean head when uncertainty ≤ ``uncertainty`` and divergence ≤ ``divergence``."""

    uncertainty: float
    divergence: float


def _ours(signals: HeadSignals, thresholds: Thresholds) -> torch.Tensor:
    u = signals.uncertainty
    keep_clean = (u[_CLEAN] <= thresholds.uncertainty) & (signals.divergence <= thresholds.divergence)
    other = torch.where(u[_ROBUST] <= u[_COMBINED], _ROBUST, _COMBINED)
    return torch.where(keep_clean, torch.full_like(other, _CLEAN), other)


def select_heads(
    signals: HeadSignals, rule: str, thresholds: Thresholds | None = None, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Index into :data:`HEADS` of the head each input gets under ``rule`` (see the module docstring)."""
    n = len(signals)
    if rule in HEADS:
        return torch.full((n,), HEADS.index(rule), dtype=torch.long)
    if rule == "oracle":
        if labels is None:
            raise ValueError("the oracle rule needs the labels")
        correct = signals.logits.argmax(-1) == labels.view(1, -1)
        first = correct.int().argmax(0)  # first correct head; 0 (clean) when none is
        return first.long()
    if rule == "ours":
        if thresholds is None:
            raise ValueError("the ours rule needs thresholds (calibrate_thresholds)")
        return _ours(signals, thresholds).long()
    raise ValueError(f"unknown head-selection rule {rule!r}; expected one of {RULES}")


def selected_predictions(signals: HeadSignals, choice: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,) when input i is answered by head ``choice[i]``."""
    predictions = signals.logits.argmax(-1)  # (H, N)
    return predictions.gather(0, choice.view(1, -1)).squeeze(0)


def _candidates(values: torch.Tensor, quantiles: int) -> list[float]:
    levels = torch.linspace(0, 1, quantiles, dtype=torch.float64)
    qs = torch.quantile(values.double(), levels).tolist() if len(values) else []
    return sorted({-1.0, *qs, math.inf})


def calibrate_thresholds(
    clean: HeadSignals,
    clean_labels: torch.Tensor,
    shifted: HeadSignals,
    shifted_labels: torch.Tensor,
    clean_weight: float = 0.5,
    max_clean_drop: float = 0.005,
    quantiles: int = 21,
    uncertainty: float | None = None,
    divergence: float | None = None,
) -> tuple[Thresholds, dict]:
    """Thresholds of ``ours`` chosen on labelled clean and shifted inputs (the adaptation split).

    Maximises ``clean_weight · clean accuracy + (1 − clean_weight) · shifted
    accuracy`` over a grid (``quantiles`` quantiles of the observed values,
    plus "never" and "always") among the thresholds whose clean accuracy is at
    most ``max_clean_drop`` below the clean head's; ties go to the larger
    thresholds. A threshold given as a number is kept fixed. Returns the
    thresholds and a record of the search.
    """
    if not 0 <= clean_weight <= 1:
        raise ValueError(f"clean_weight must be in [0, 1], found {clean_weight}")
    if max_clean_drop < 0:
        raise ValueError(f"max_clean_drop must be ≥ 0, found {max_clean_drop}")
    if quantiles < 2:
        raise ValueError(f"quantiles must be at least 2, found {quantiles}")
    both = HeadSignals.cat([clean, shifted])
    u_grid = [float(uncertainty)] if uncertainty is not None else _candidates(both.uncertainty[_CLEAN], quantiles)
    d_grid = [float(divergence)] if divergence is not None else _candidates(both.divergence, quantiles)
    correct_c = clean.logits.argmax(-1) == clean_labels.view(1, -1)
    correct_s = shifted.logits.argmax(-1) == shifted_labels.view(1, -1)
    floor = correct_c[_CLEAN].double().mean().item() - max_clean_drop
    best, best_score, best_acc = None, -math.inf, None
    for u in sorted(u_grid, reverse=True):
        for d in sorted(d_grid, reverse=True):
            t = Thresholds(u, d)
            acc_c = correct_c.gather(0, _ours(clean, t).view(1, -1)).double().mean().item()
            acc_s = correct_s.gather(0, _ours(shifted, t).view(1, -1)).double().mean().item()
            if acc_c < floor - 1e-12:
                continue
            score = clean_weight * acc_c + (1 - clean_weight) * acc_s
            if score > best_score + 1e-12:
                best, best_score, best_acc = t, score, (acc_c, acc_s)
    if best is None:  # only when both thresholds are fixed and violate the clean floor
        best = Thresholds(u_grid[0], d_grid[0])
        best_acc = (
            correct_c.gather(0, _ours(clean, best).view(1, -1)).double().mean().item(),
            correct_s.gather(0, _ours(shifted, best).view(1, -1)).double().mean().item(),
        )
        best_score = clean_weight * best_acc[0] + (1 - clean_weight) * best_acc[1]
        log.warning("the fixed thresholds lose more than max_clean_drop of clean accuracy on the adaptation split")
    record = {
        "uncertainty": _finite(best.uncertainty),
        "divergence": _finite(best.divergence),
        "objective": best_score,
        "adapt_clean_accuracy": best_acc[0],
        "adapt_shifted_accuracy": best_acc[1],
        "adapt_clean_head_clean_accuracy": floor + max_clean_drop,
        "grid": [len(u_grid), len(d_grid)],
        "n_clean": len(clean),
        "n_shifted": len(shifted),
    }
    return best, record


def _finite(value: float) -> float | None:
    """JSON-friendly threshold: None for "always" (+∞)."""
    return None if math.isinf(value) else value
