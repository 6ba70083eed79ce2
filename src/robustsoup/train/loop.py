"""The one epoch loop (:func:`run_epochs`); what a batch computes is a pluggable step, what perturbs it an input policy.

The loop knows nothing of the papers: pre-training, every fine-tune
(:class:`SupervisedStep`, through :func:`train_model`) and the multi-head
distillation (``robustsoup.distill.training.DistillStep``) are this loop with
another step, policy, schedule and starting point. SGD with momentum and
weight decay, a learning rate updated every iteration; the supervised step
keeps the model in eval mode while the policy attacks and in train mode for
the update (as robust-finetuning does). State is saved at the end of every
epoch, so a killed run resumes where it stopped and ends with the same weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from ..data import ImageSplit
from ..data.loading import BatchSource
from ..device import Arithmetic, compile_model, resolve_arithmetic
from ..io import atomic_path
from ..progress import Progress
from .augment import AUGMENTATIONS, BatchAugmentation, batch_augmentation
from .distributed import Distributed, RankPolicy, convert_batchnorm, current, loss_weight
from .overflow import LossGuard
from .policies import AdversarialInputs, InputPolicy

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint is written."""


def learning_rate(schedule: str, lr_max: float, iteration: int, total: int, per_epoch: int | None = None) -> float:
    """Learning rate of the step at ``iteration`` (0-based) of ``total``, ``per_epoch`` iterations an epoch.

    ``piecewise-ft``: lr_max, lr_max/10, lr_max/100 by thirds of training,
    read after the step as robust-finetuning does (its train.py evaluates the
    schedule at epoch + (i + 1)/iterations-per-epoch, in epochs; ``per_epoch``
    None counts all of ``total`` as one epoch); ``cosine``: half a cosine from
    lr_max to 0 read before the step; ``constant``: lr_max throughout; ``multistep``: lr_max,
    lr_max/10 from 40 % of the epochs, lr_max/100 from 80 %, by whole epochs (the RWS reference's
    MultiStepLR at epochs [20, 40] of 50, stepped after each epoch).
    """
    if schedule == "piecewise-ft":
        per_epoch = per_epoch or max(total, 1)
        epochs = max(total, 1) / per_epoch
        progress = (iteration // per_epoch + (iteration % per_epoch + 1) / per_epoch) / epochs
        if progress < 1 / 3:
            return lr_max
        return lr_max / 10 if progress < 2 / 3 else lr_max / 100
    if schedule == "cosine":
        return lr_max * 0.5 * (1 + math.cos(math.pi * (iteration / max(total, 1))))
    if schedule == "constant":
        return lr_max
    if schedule == "multistep":
        epochs, epoch = max(total, 1) / (per_epoch or max(total, 1)), iteration // (per_epoch or max(total, 1))
        return lr_max * 0.1 ** sum(epoch >= round(f * epochs) for f in (0.4, 0.8))
    raise ValueError(f"unknown schedule {schedule!r}; expected piecewise-ft, cosine, constant or multistep")


@dataclass
class TrainSettings:
    """Optimisation settings of one training run (see the config schema).

    ``decay_all``: weight decay on every parameter (fine-tuning, as the
    reference does); otherwise BatchNorm weights and biases (every parameter
    of at most one dimension) are exempt (training from scratch), and
    ``exempt_lr`` says their learning rate: ``"schedule"`` (the schedule, like
    every other parameter) or a number kept fixed throughout (1.0 is what
    robust-finetuning's from-scratch train.py does). ``augmentation``
    (standard, crop, none) crops and flips the training images as
    :mod:`robustsoup.train.augment` says for the data set. ``precision`` (auto, float32, bf16, fp16) is the
    autocast of forward passes, attack included, and ``channels_last`` (a bool
    or auto) the memory format; ``auto`` is resolved for the training device by
    :func:`robustsoup.device.resolve_arithmetic`. Both are speed options only:
    weights, optimizer state and losses stay float32. ``gpus`` is the number of
    data-parallel processes the run is launched as (:mod:`robustsoup.train.distributed`), ``nodes``
    the machines they spread over (a SLURM step; 1 elsewhere),
    ``sync_batchnorm`` whether their BatchNorm layers use the global batch's statistics.
    ``compile`` runs the model's forward passes (training attack included) through
    ``torch.compile`` (:func:`robustsoup.device.compile_model`), a speed option like ``precision``.
    """

    epochs: int
    lr: float
    schedule: str = "piecewise-ft"
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    decay_all: bool = True
    precision: str = "float32"
    channels_last: bool | str = False
    exempt_lr: float | str = "schedule"
    augmentation: str = "none"
    gpus: int = 1
    sync_batchnorm: bool = False
    compile: bool = False
    nodes: int = 1

    def __post_init__(self) -> None:
        if not (isinstance(self.gpus, int) and self.gpus >= 1):
            raise ValueError(f"gpus must be a positive integer, found {self.gpus!r}")
        if not (isinstance(self.nodes, int) and 1 <= self.nodes <= self.gpus):
            raise ValueError(f"nodes must be an integer from 1 to gpus ({self.gpus}), found {self.nodes!r}")
        if self.augmentation not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {self.augmentation!r}; expected one of {', '.join(AUGMENTATIONS)}")
        if self.exempt_lr != "schedule" and not (isinstance(self.exempt_lr, int | float) and self.exempt_lr > 0):
            raise ValueError(f"exempt_lr must be 'schedule' or a positive number, found {self.exempt_lr!r}")

    def arithmetic(self, device: torch.device, model: nn.Module | None = None) -> Arithmetic:
        """The precision and memory format this training (of ``model``) runs with on ``device``."""
        return resolve_arithmetic(self.precision, self.channels_last, device, model)

    def resolved(
        self, device: torch.device, record: dict | None = None, model: nn.Module | None = None
    ) -> TrainSettings:
        """These settings with ``auto`` resolved for ``device``.

        ``record`` (a sidecar's ``training`` dict) gets the resolved precision
        and memory format, what the config asked for, and whether the model is compiled.
        """
        arithmetic = self.arithmetic(device, model)
        if record is not None:
            record.update(
                precision_requested=self.precision,
                channels_last_requested=self.channels_last,
                channels_last=arithmetic.channels_last,
                compile=self.compile,
                **arithmetic.record(),
            )
        return dataclasses.replace(self, precision=arithmetic.precision, channels_last=arithmetic.channels_last)


def _parameter_groups(model: nn.Module, settings: TrainSettings) -> list[dict]:
    if settings.decay_all:
        return [{"params": list(model.parameters()), "weight_decay": settings.weight_decay}]
    decay, exempt = [], []
    for parameter in model.parameters():
        (exempt if parameter.dim() <= 1 else decay).append(parameter)
    exempt_group = {"params": exempt, "weight_decay": 0.0}
    if settings.exempt_lr != "schedule":
        exempt_group.update(lr=float(settings.exempt_lr), scheduled=False)
    return [{"params": decay, "weight_decay": settings.weight_decay}, exempt_group]


def epoch_batches(
    source: BatchSource, order: torch.Tensor, batch_size: int, counter: Progress | None = None, shard=None
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch's mini-batches in ``order``: (batch number, indices, images in [0,1], labels) on the
    source's device, each counted by ``counter`` once the caller is done with it (``shard``: only a rank's
    rows, see :meth:`BatchSource.batches`)."""
    for b, (idx, x, y) in enumerate(source.batches(order, batch_size, shard)):
        yield b, idx, x.float().div_(255.0), y
        if counter is not None:
            counter.advance()


def backward_and_step(
    loss: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    scaler=None,
    after_backward: Callable[[], None] | None = None,
) -> None:
    """Backward pass and optimizer step, through the fp16 loss scaler when there is one; ``after_backward``
    (the gradients' all-reduce of a distributed run) between the two."""
    if scaler is None:
        loss.backward()
        if after_backward is not None:
            after_backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    if after_backward is not None:
        after_backward()
    scaler.step(optimizer)
    scaler.update()


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` for every parameter group but those marked ``scheduled: False`` (a fixed learning rate)."""
    for group in optimizer.param_groups:
        if group.get("scheduled", True):
            group["lr"] = lr


@dataclass
class EpochState:
    """What a training loop saves at the end of every epoch and restores after a kill.

    Weights, optimizer, the batch-order generator, the global torch RNG, the
    input policy's statistics, the augmentation's generator (when there is
    one), the best epoch kept so far (when one is chosen, :class:`BestEpoch`)
    and the history so far, written atomically to
    ``path`` (nothing is saved when it is None). A state written under another
    ``fingerprint`` (other settings) or unreadable is ignored with a warning.
    """

    path: Path | None
    fingerprint: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    policy: InputPolicy
    augmentation: BatchAugmentation | None = None
    best: BestEpoch | None = None
    scaler: torch.amp.GradScaler | None = None

    def __post_init__(self) -> None:
        self.path = Path(self.path) if self.path is not None else None

    def restore(self, epochs: int, rank: int = 0, world_size: int = 1) -> tuple[list[dict], int]:
        """Load a matching state if there is one; return (history, first epoch to run).

        A state saved by ``world_size`` ranks gives rank ``rank`` its own global RNG and policy state; any
        other state gives every rank rank 0's.
        """
        state = self._load() if self.path is not None else None
        if state is None:
            return [], 1
        if state.get("fingerprint") != self.fingerprint:
            log.warning("resume state %s belongs to other settings; starting from the first epoch", self.path)
            return [], 1
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        ranks = state.get("ranks") or []
        own = ranks[rank] if len(ranks) == world_size else state
        torch.set_rng_state(own["torch_rng"])
        self.policy.load_state_dict(own["policy"])
        if self.augmentation is not None:
            self.augmentation.load_state_dict(state["augmentation"])
        if self.best is not None:
            self.best.load_state_dict(state["best"])
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        first_epoch = int(state["epoch"]) + 1
        log.info("resuming from %s after epoch %d of %d", self.path, first_epoch - 1, epochs)
        return list(state["history"]), first_epoch

    def rank_state(self) -> dict:
        """What differs between the ranks of a distributed run: the global RNG and the input policy."""
        return {"torch_rng": torch.get_rng_state(), "policy": self.policy.state_dict()}

    def save(self, epoch: int, history: list[dict], ranks: list[dict] | None = None) -> None:
        """Write the state after ``epoch`` (with every rank's :meth:`rank_state`, in rank order, when given)."""
        if self.path is None:
            return
        state = {
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "policy": self.policy.state_dict(),
            "augmentation": self.augmentation.state_dict() if self.augmentation is not None else {},
            "best": self.best.state_dict() if self.best is not None else {},
            "scaler": self.scaler.state_dict() if self.scaler is not None else {},
            "history": history,
        }
        if ranks is not None:
            state["ranks"] = ranks
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def _load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
            if not isinstance(state, dict):
                raise TypeError(f"expected a dict, found {type(state).__name__}")
            return state
        except Exception as exc:  # a corrupt state is not worth failing over: start afresh
            log.warning("ignoring unreadable resume state %s (%s); starting from the first epoch", self.path, exc)
            return None


@dataclass
class BestEpoch:
    """Keep the weights of the epoch with the highest ``score(model)`` (ties: the earlier epoch).

    :func:`run_epochs` calls :meth:`update` after every epoch and loads the kept
    weights into the model at the end, so a training returns its best epoch
    rather than its last (the RWS reference keeps each expert's best epoch on
    corrupted validation images). ``name`` says what the score measures (for
    the sidecar and the logs). The kept weights, their epoch and score are part
    of the resumable state, so a killed run resumes to the same choice.
    """

    score: Callable[[nn.Module], float]
    name: str
    epoch: int = 0
    value: float = -math.inf
    weights: dict[str, torch.Tensor] | None = None

    def update(self, model: nn.Module, epoch: int) -> float:
        """Score ``model`` after ``epoch`` (in eval mode, without gradients); keep its weights if best so far."""
        was_training = model.training
        model.eval()
        with torch.no_grad():
            value = float(self.score(model))
        model.train(was_training)
        if value > self.value:
            self.epoch, self.value = epoch, value
            self.weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        return value

    def restore(self, model: nn.Module) -> None:
        """Load the kept weights into ``model`` (nothing kept: nothing changes)."""
        if self.weights is not None:
            model.load_state_dict(self.weights)

    def record(self) -> dict:
        """What the sidecar says of the choice."""
        return {"selection": self.name, "selected_epoch": self.epoch, "selection_score": self.value}

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "value": self.value, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.value, self.weights = int(state["epoch"]), float(state["value"]), state["weights"]


class EpochSettings(Protocol):
    """What :func:`run_epochs` reads of a run's settings (:class:`TrainSettings` and the distillation's have it)."""

    epochs: int
    lr: float
    schedule: str
    batch_size: int
    momentum: float
    seed: int


@dataclass
class BatchStep(ABC):
    """What a training does with one batch; :func:`run_epochs` does everything else.

    The loop owns the optimizer (SGD over :meth:`parameter_groups`), the batch
    order, the learning-rate schedule, the resumable state (``model`` and
    ``policy`` are saved with it), the divergence check and the history rows.
    A step says what is optimised, how a batch's loss is computed on
    ``device`` (train and eval modes, the input policy, every forward pass in
    ``arithmetic``) and which per-epoch metrics its history rows add.
    ``label`` names the loop in progress bars and logs, ``loss_name`` the
    loss in errors.
    """

    model: nn.Module
    policy: InputPolicy
    arithmetic: Arithmetic
    device: torch.device
    label: ClassVar[str] = "epoch"
    loss_name: ClassVar[str] = "training loss"

    @abstractmethod
    def parameter_groups(self) -> list[dict]:
        """The optimizer's parameter groups (with their weight decay)."""

    @abstractmethod
    def begin_epoch(self) -> None:
        """Reset the step's per-epoch tallies."""

    @abstractmethod
    def loss(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of the batch ``x``, ``y`` (training-split indices ``idx``); tallies the step's metrics."""

    @abstractmethod
    def epoch_metrics(self, seen: int) -> dict:
        """The step's entries of the epoch's history row, after ``seen`` images."""

    def sum_tallies(self, all_sum: Callable[[Sequence[float]], list[float]]) -> None:
        """Replace this rank's per-epoch tallies by their sums over ranks (``all_sum``) before
        :meth:`epoch_metrics` of a distributed run; a step without tallies keeps this no-op."""
        return None


def run_epochs(
    step: BatchStep,
    data: ImageSplit,
    settings: EpochSettings,
    *,
    augmentation: BatchAugmentation | None = None,
    resume_path: str | Path | None = None,
    fingerprint: str = "",
    on_epoch_end: Callable[[int], None] | None = None,
    distributed: Distributed | None = None,
    best: BestEpoch | None = None,
) -> list[dict]:
    """The one epoch loop: train ``step.model`` in place on ``data``; return one history row per epoch.

    SGD with momentum over the step's parameter groups, a new seeded batch
    order every epoch, the learning rate of ``settings.schedule`` set every
    iteration, batches on ``step.device``, cropped and flipped by
    ``augmentation`` (when given) before the step sees them. With ``resume_path``,
    state (weights, optimizer, RNGs, policy statistics, history) is written
    there at the end of every epoch, and a run that finds a state with the
    same ``fingerprint`` resumes after its last epoch; the caller deletes it
    once the final checkpoint is written. Raises
    :class:`TrainingDivergedError` if the loss stops being finite.

    ``distributed`` (default: the initialised process group, if any) makes this
    one rank of a data-parallel run (:mod:`robustsoup.train.distributed`): it
    trains on its shard of every global batch, gradients are averaged over
    ranks, only rank 0 writes the state and logs, and the history is global.

    ``best`` (a :class:`BestEpoch`) scores the model after every epoch (history
    key ``selection_score``; every rank scores the same weights) and the loop
    ends with the best epoch's weights instead of the last's.
    """
    if distributed is None:
        distributed = current()
    model, arithmetic, device = step.model, step.arithmetic, step.device
    main = distributed is None or distributed.is_main
    if main:
        log.info("arithmetic: %s", arithmetic)
    policy = step.policy
    if distributed is not None:
        distributed.check_batches(len(data), settings.batch_size)
        if distributed.sync_batchnorm:
            convert_batchnorm(model)
        step.policy = RankPolicy(policy, distributed)
    if arithmetic.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(step.parameter_groups(), lr=settings.lr, momentum=settings.momentum)
    scaler = arithmetic.grad_scaler(device)
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(data)
    per_epoch = math.ceil(n / settings.batch_size)
    total = per_epoch * settings.epochs
    epoch_state = EpochState(
        resume_path, fingerprint, model, optimizer, generator, step.policy, augmentation, best, scaler
    )
    guard = LossGuard(scaler)
    if distributed is None:
        history, first_epoch = epoch_state.restore(settings.epochs)
        after_backward = None
    else:
        history, first_epoch = epoch_state.restore(settings.epochs, distributed.rank, distributed.world_size)
        distributed.broadcast_model(model)  # every rank starts from rank 0's weights

        def after_backward() -> None:
            distributed.average_gradients(model)

    shard = distributed.shard if distributed is not None else None
    on_augmented = f" on {augmentation.name}" if augmentation is not None else ""
    source = BatchSource(data, device)
    if main:
        log.info("batches: %s", source.record())

    desc = f"{step.label}s {first_epoch}–{settings.epochs} [{step.policy.name}{on_augmented}]"
    counter = Progress(per_epoch * (settings.epochs - first_epoch + 1), desc, "batches", enabled=main)
    try:
        for epoch in range(first_epoch, settings.epochs + 1):
            start = time.perf_counter()
            order = torch.randperm(n, generator=generator)
            step.begin_epoch()
            guard.begin_epoch()
            loss_sum, seen, counted = 0.0, 0, 0
            iteration = (epoch - 1) * per_epoch
            lr = settings.lr
            # A rank reads and augments only its shard of each global batch (drawing the global batch's crops).
            for b, idx, x, y in epoch_batches(source, order, settings.batch_size, counter, shard):
                batch = min(settings.batch_size, n - b * settings.batch_size)
                if augmentation is not None:
                    x = augmentation(x, shard(batch) if shard is not None else None, batch)
                if arithmetic.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                lr = learning_rate(settings.schedule, settings.lr, iteration, total, per_epoch)
                set_learning_rate(optimizer, lr)
                loss = step.loss(idx, x, y)
                if distributed is None:
                    value, backward_loss = loss.item(), loss
                else:  # the global batch's mean loss; each rank's gradient weighted by its share of the batch
                    value = distributed.all_sum([loss.item() * len(y)])[0] / batch
                    backward_loss = loss * loss_weight(distributed, len(y), batch)
                skipped = guard.skips(value)  # an fp16 overflow: the scaler skips the step
                if not (skipped or math.isfinite(value)):
                    raise TrainingDivergedError(
                        f"the {step.loss_name} became {value} at epoch {epoch}, batch {b + 1}/{per_epoch} "
                        f"(lr {lr:g}); lower the learning rate or check the data. No checkpoint was written."
                    )
                optimizer.zero_grad(set_to_none=True)
                backward_and_step(backward_loss, optimizer, scaler, after_backward)
                if distributed is not None and not distributed.sync_batchnorm:
                    distributed.broadcast_buffers(model)  # rank 0's running statistics, as DDP
                iteration += 1
                loss_sum += 0.0 if skipped else value * batch
                counted += 0 if skipped else batch
                seen += batch
            if distributed is not None:
                step.sum_tallies(distributed.all_sum)
            loss = loss_sum / counted if counted else math.nan
            row = {"epoch": epoch, "loss": loss, "lr": lr, "seconds": time.perf_counter() - start, **guard.record()}
            row.update(step.epoch_metrics(seen))
            if best is not None:
                row["selection_score"] = best.update(model, epoch)
            if main:
                log.info(
                    "%s %d/%d loss %.4f lr %.4g (%.1fs) %s",
                    step.label,
                    epoch,
                    settings.epochs,
                    row["loss"],
                    lr,
                    row["seconds"],
                    {k: v for k, v in row.items() if k not in ("epoch", "loss", "lr", "seconds")},
                )
            history.append(row)
            if distributed is None:
                epoch_state.save(epoch, history)
            else:
                ranks = distributed.gather_objects(epoch_state.rank_state())
                if main:
                    epoch_state.save(epoch, history, ranks)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
    finally:
        counter.close()
        step.policy = policy
    if best is not None:
        best.restore(model)
        if main:
            log.info("keeping epoch %d of %d (%s %.4f)", best.epoch, settings.epochs, best.name, best.value)
    model.eval()
    if arithmetic.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return history


@dataclass
class SupervisedStep(BatchStep):
    """Cross-entropy on the input policy's batch: pre-training and every fine-tune.

    The model is in eval mode while the policy perturbs the batch (an attack
    must not update BatchNorm statistics) and in train mode for the update,
    as robust-finetuning does. History rows get the training accuracy and,
    for adversarial policies, the attack's running robust accuracy per norm.
    """

    settings: TrainSettings

    def parameter_groups(self) -> list[dict]:
        return _parameter_groups(self.model, self.settings)

    def begin_epoch(self) -> None:
        self.correct = 0

    def loss(self, idx: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        with self.arithmetic.autocast(self.device):
            x_train = self.policy(self.model, x, y).detach()
        self.model.train()
        with self.arithmetic.autocast(self.device):
            logits = self.model(x_train)
        self.correct += int((logits.detach().argmax(1) == y).sum())
        return F.cross_entropy(logits.float(), y)

    def sum_tallies(self, all_sum: Callable[[Sequence[float]], list[float]]) -> None:
        self.correct = int(all_sum([self.correct])[0])

    def epoch_metrics(self, seen: int) -> dict:
        metrics = {"train_accuracy": self.correct / seen}
        if isinstance(self.policy, AdversarialInputs):
            metrics["attack_robust_accuracy"] = self.policy.robust_accuracy()
        return metrics


def train_model(
    model: nn.Module,
    data: ImageSplit,
    policy: InputPolicy,
    settings: TrainSettings,
    device: torch.device,
    *,
    resume_path: str | Path | None = None,
    fingerprint: str = "",
    on_epoch_end: Callable[[int], None] | None = None,
    distributed: Distributed | None = None,
    best: BestEpoch | None = None,
) -> list[dict]:
    """Train ``model`` in place on ``data`` with ``policy``'s inputs; one history row per epoch.

    :func:`run_epochs` with a :class:`SupervisedStep`: resumable with
    ``resume_path`` and ``fingerprint``; ``settings``' precision and memory
    format are resolved for ``device``; ``settings.augmentation`` is read for
    ``data``'s data set (:func:`robustsoup.train.augment.batch_augmentation`); with ``settings.compile``
    the step runs ``model`` compiled (its resume state then holds the compiled module's keys). Raises
    :class:`TrainingDivergedError` if the loss stops being finite. ``distributed`` and ``best``: as
    :func:`run_epochs`.
    """
    model.to(device)
    arithmetic = settings.arithmetic(device, model)
    # A compiled model shares ``model``'s parameters and buffers, so ``model`` ends up trained in place.
    step = SupervisedStep(compile_model(model, settings.compile), policy, arithmetic, device, settings=settings)
    return run_epochs(
        step,
        data,
        settings,
        augmentation=batch_augmentation(settings.augmentation, data.dataset, settings.seed),
        resume_path=resume_path,
        fingerprint=fingerprint,
        on_epoch_end=on_epoch_end,
        distributed=distributed,
        best=best,
    )
