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

This module is the training: the settings (:class:`DistillSettings`), the loss
(:func:`kd_loss`, :func:`head_losses`) and the batch step of the one epoch loop
(:class:`DistillStep`, :func:`distill_multihead`). The rest, by concern: the shifted
inputs (:mod:`.augmentation`), the student's surgery (:mod:`.student`), head selection at
test time (:mod:`.heads`) and the thresholds of its rule ``ours`` (:mod:`.calibration`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageSplit
from ..data.loading import BatchSource
from ..device import PRECISIONS
from ..models import Normalized
from ..models.multihead import HEADS, MultiHeadNet
from ..train.distributed import Distributed, current
from ..train.loop import BatchStep, BestEpoch, TrainSettings, run_epochs
from ..train.shared import shared_rows
from .student import freeze_for_distillation, multihead_net, normalized_input, set_distillation_mode

# The keys of config ``distill.distillation`` that are :class:`DistillSettings` fields as they are.
DISTILLATION_KEYS = (
    "epochs",
    "lr",
    "schedule",
    "batch_size",
    "momentum",
    "weight_decay",
    "temperature",
    "ce_weight",
    "kd_weight",
    "head_weights",
    "batchnorm",
    "precision",
    "gpus",
    "nodes",
    "sync_batchnorm",
)


@dataclass
class DistillSettings(TrainSettings):
    """The distillation's settings (config ``distill.distillation``): the optimisation of every training
    (:class:`~robustsoup.train.loop.TrainSettings`: epochs, lr, schedule, batch size, momentum, weight decay,
    precision, ranks …) and the loss. The distillation optimises the tuned parameters only, all with weight
    decay (``decay_all`` and ``exempt_lr`` do not apply), and crops or flips nothing (``augmentation``
    stays ``none``: the clean head's targets are the original student's logits on the uncropped images)."""

    schedule: str = "cosine"
    batch_size: int = 32
    temperature: float = 4.0
    ce_weight: float = 1.0
    kd_weight: float = 1.0
    head_weights: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(HEADS, 1.0))
    batchnorm: str = "train"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, found {self.precision!r}")
        if self.augmentation != "none":
            raise ValueError(
                f"the distillation crops and flips nothing: augmentation must be 'none', found {self.augmentation!r}"
            )
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
            features = self.net.features(normalized_input(self.model, x_train))
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
    model.to(device).eval()
    arithmetic = settings.arithmetic(device, model)
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


@dataclass
class Distillation:
    """The distillation as the one runner's training (:func:`robustsoup.train.run.train_and_checkpoint`'s
    ``trainer``, in place of :func:`robustsoup.train.loop.train_model`): called with the multi-head student and
    the runner's data, policy, resolved settings, device and resume state, it computes the clean head's targets
    (``student``'s logits on every training image, once over the ranks of a distributed run, kept at
    ``reference_path``; the original student is dropped afterwards) and runs :func:`distill_multihead`.

    ``teacher`` and ``student`` are on the CPU (so that the call pickles for launched ranks) and move to the
    training device here.
    """

    teacher: nn.Module
    student: nn.Module | None
    reference_path: Path

    def __call__(
        self,
        model: Normalized,
        data: ImageSplit,
        policy,
        settings: DistillSettings,
        device: torch.device,
        *,
        resume_path: str | Path | None = None,
        fingerprint: str = "",
        distributed: Distributed | None = None,
        best: BestEpoch | None = None,
    ) -> list[dict]:
        if best is not None:
            raise ValueError("the distillation keeps its last epoch; it chooses no best epoch (best=None)")
        if self.student is None:
            raise RuntimeError("this Distillation has run: its original student is gone; make a new one")
        student = self.student.to(device)
        reference = shared_rows(
            lambda idx: predict_logits(student, data, device, indices=idx), len(data), self.reference_path, distributed
        )
        self.student = student = None  # the targets are all the distillation needs of it
        return distill_multihead(
            model,
            self.teacher,
            reference,
            data,
            policy,
            settings,
            device,
            fingerprint=fingerprint,
            resume_path=resume_path,
            distributed=distributed,
        )


__all__ = [
    "DISTILLATION_KEYS",
    "DistillSettings",
    "DistillStep",
    "Distillation",
    "distill_multihead",
    "head_losses",
    "kd_loss",
    "predict_logits",
]
