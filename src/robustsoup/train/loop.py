"""One training loop; what perturbs a batch is a pluggable input policy.

The loop knows nothing of the papers: pre-training and every fine-tune are
this loop with another policy, schedule and starting point. SGD with
momentum and weight decay, a learning rate updated every iteration, the
model in eval mode while the policy attacks and in train mode for the update
(as robust-finetuning does). State is saved at the end of every epoch, so a
killed run resumes where it stopped and ends with the same weights.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from ..attacks import pgd_attack
from ..attacks.apgd import apgd_train
from ..attacks.projections import NORMS
from ..data import ImageSplit
from ..device import Arithmetic, resolve_arithmetic
from ..io import atomic_path

log = logging.getLogger(__name__)

TRAINING_ATTACKS = ("apgd", "pgd")


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; no checkpoint is written."""


class InputPolicy(Protocol):
    """Maps a clean batch to the batch the model is updated on."""

    name: str

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class CleanInputs:
    """Nominal training: the batch as it is."""

    name: str = "clean"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


@dataclass
class AdversarialInputs:
    """Adversarial training against one or several Lp threat models.

    With several norms, each batch is attacked in one norm, drawn with
    probability ∝ 1 − (running robust accuracy of that norm), uniformly until
    every norm has been used once (robust-finetuning's multi-norm training;
    the training cost is that of a single norm).
    """

    norms: Sequence[str]
    eps: Sequence[float]
    steps: int
    attack: str = "apgd"
    seed: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        for norm, eps in zip(self.norms, self.eps, strict=True):
            if norm not in NORMS:
                raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
            if not eps > 0:
                raise ValueError(f"ε for {norm} must be positive, got {eps}")
        if self.attack not in TRAINING_ATTACKS:
            raise ValueError(f"unknown training attack {self.attack!r}; expected one of {TRAINING_ATTACKS}")
        self.generator = torch.Generator().manual_seed(self.seed + 1)
        self.robust = torch.zeros(len(self.norms), dtype=torch.float64)
        self.seen = torch.zeros(len(self.norms), dtype=torch.float64)
        parts = "+".join(f"{n}(ε={e:g})" for n, e in zip(self.norms, self.eps))
        self.name = f"{self.attack}-{self.steps} {parts}"

    def _draw_norm(self) -> int:
        if len(self.norms) == 1:
            return 0
        if bool((self.seen > 0).all()):
            weights = 1.0 - self.robust / self.seen
        else:
            weights = torch.ones(len(self.norms), dtype=torch.float64)
        weights = weights.clamp_min(1e-6)
        return int(torch.multinomial(weights, 1, generator=self.generator))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        which = self._draw_norm()
        norm, eps = self.norms[which], float(self.eps[which])
        if self.attack == "apgd":
            x_adv, robust = apgd_train(model, x, y, norm, eps, n_iter=self.steps, training=True)
        else:
            x_adv = pgd_attack(model, x, y, norm, eps, self.steps, generator=self.generator)
            with torch.no_grad():
                robust = model(x_adv).argmax(1) == y
        self.robust[which] += float(robust.sum())
        self.seen[which] += len(y)
        return x_adv

    def robust_accuracy(self) -> dict[str, float]:
        """Running robust accuracy of the training attack, per norm."""
        return {n: float(r / s) if s else float("nan") for n, r, s in zip(self.norms, self.robust, self.seen)}

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "robust": self.robust.clone(), "seen": self.seen.clone()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.robust = state["robust"].clone()
        self.seen = state["seen"].clone()


@dataclass
class CorruptionInputs:
    """Corruption augmentation: each image gets a random corruption and severity (or stays clean).

    Draws per image from ``corruptions`` × ``severities`` (Hendrycks &
    Dietterich's generator at the image's resolution), keeping a fraction
    ``clean_fraction`` of the images clean. Used to train corruption experts
    (Robust Weight Signatures) and the robust teacher (robust distillation).
    """

    corruptions: Sequence[str]
    severities: Sequence[int]
    clean_fraction: float = 0.0
    seed: int = 0
    name: str = field(init=False)

    def __post_init__(self) -> None:
        from ..data.corruptions import CORRUPTIONS, SEVERITIES

        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if unknown or not self.corruptions:
            raise ValueError(f"unknown corruptions {unknown or '[]'}; expected names from {list(CORRUPTIONS)}")
        bad = [s for s in self.severities if s not in SEVERITIES]
        if bad or not self.severities:
            raise ValueError(f"severities must be among {list(SEVERITIES)}, found {list(self.severities)}")
        if not 0 <= self.clean_fraction < 1:
            raise ValueError(f"clean_fraction must be in [0, 1), found {self.clean_fraction}")
        self.generator = torch.Generator().manual_seed(self.seed + 2)
        self.batches = 0
        self.name = f"corrupt({'+'.join(self.corruptions)}; s={','.join(map(str, self.severities))})"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        from ..data.corruptions import corrupt

        n = len(x)
        which = torch.randint(len(self.corruptions), (n,), generator=self.generator)
        level = torch.randint(len(self.severities), (n,), generator=self.generator)
        clean = torch.rand(n, generator=self.generator) < self.clean_fraction
        images = (x.detach().cpu() * 255).round().to(torch.uint8)
        out = images.clone()
        for c in range(len(self.corruptions)):
            for s in range(len(self.severities)):
                idx = ((which == c) & (level == s) & ~clean).nonzero().flatten()
                if len(idx):
                    out[idx] = corrupt(
                        images[idx],
                        self.corruptions[c],
                        self.severities[s],
                        seed=self.seed,
                        index_offset=self.batches * n,
                    )
        self.batches += 1
        return out.to(x.device).float().div_(255.0)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "batches": self.batches}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.batches = int(state["batches"])


def make_input_policy(
    norm: str | Sequence[str], eps_by_norm: dict[str, float], steps: int, attack: str = "apgd", seed: int = 0
) -> InputPolicy:
    """``norm='none'`` gives clean training; a norm or a list of norms adversarial training."""
    if norm == "none":
        return CleanInputs()
    norms = [norm] if isinstance(norm, str) else list(norm)
    missing = [n for n in norms if n not in eps_by_norm]
    if missing:
        raise ValueError(f"no ε configured for {missing}; expected them under `threats`")
    return AdversarialInputs(norms, [eps_by_norm[n] for n in norms], steps, attack=attack, seed=seed)


def learning_rate(schedule: str, lr_max: float, iteration: int, total: int) -> float:
    """Learning rate at ``iteration`` (0-based) of ``total``.

    ``piecewise-ft``: lr_max, lr_max/10, lr_max/100 by thirds of the
    iterations (robust-finetuning); ``cosine``: half a cosine from lr_max to
    0; ``constant``: lr_max throughout.
    """
    progress = iteration / max(total, 1)
    if schedule == "piecewise-ft":
        if progress < 1 / 3:
            return lr_max
        return lr_max / 10 if progress < 2 / 3 else lr_max / 100
    if schedule == "cosine":
        return lr_max * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "constant":
        return lr_max
    raise ValueError(f"unknown schedule {schedule!r}; expected piecewise-ft, cosine or constant")


@dataclass
class TrainSettings:
    """Optimisation settings of one training run (see the config schema).

    ``decay_all``: weight decay on every parameter (fine-tuning, as the
    reference does); otherwise BatchNorm weights and biases are exempt
    (training from scratch). ``precision`` (auto, float32, bf16, fp16) is the
    autocast of forward passes, attack included, and ``channels_last`` (a bool
    or auto) the memory format; ``auto`` is resolved for the training device by
    :func:`robustsoup.device.resolve_arithmetic`. Both are speed options only:
    weights, optimizer state and losses stay float32.
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

    def arithmetic(self, device: torch.device, model: nn.Module | None = None) -> Arithmetic:
        """The precision and memory format this training (of ``model``) runs with on ``device``."""
        return resolve_arithmetic(self.precision, self.channels_last, device, model)

    def resolved(
        self, device: torch.device, record: dict | None = None, model: nn.Module | None = None
    ) -> TrainSettings:
        """These settings with ``auto`` resolved for ``device``.

        ``record`` (a sidecar's ``training`` dict) gets the resolved precision
        and memory format, and what the config asked for.
        """
        arithmetic = self.arithmetic(device, model)
        if record is not None:
            record.update(
                precision_requested=self.precision,
                channels_last_requested=self.channels_last,
                channels_last=arithmetic.channels_last,
                **arithmetic.record(),
            )
        return dataclasses.replace(self, precision=arithmetic.precision, channels_last=arithmetic.channels_last)


def _parameter_groups(model: nn.Module, settings: TrainSettings) -> list[dict]:
    if settings.decay_all:
        return [{"params": list(model.parameters()), "weight_decay": settings.weight_decay}]
    decay, exempt = [], []
    for parameter in model.parameters():
        (exempt if parameter.dim() <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": settings.weight_decay}, {"params": exempt, "weight_decay": 0.0}]


def epoch_batches(
    data: ImageSplit, order: torch.Tensor, batch_size: int, device: torch.device, desc: str
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One epoch's mini-batches in ``order``: (batch number, indices, images in [0,1], labels) on ``device``."""
    per_epoch = math.ceil(len(order) / batch_size)
    for b in tqdm(range(per_epoch), desc=desc, file=sys.stderr, mininterval=10, leave=True):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield b, idx, data.load(idx).to(device).float().div_(255.0), data.labels[idx].to(device)


def step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler=None) -> None:
    """Backward pass and optimizer step, through the fp16 loss scaler when there is one."""
    if scaler is None:
        loss.backward()
        optimizer.step()
        return
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass
class EpochState:
    """What a training loop saves at the end of every epoch and restores after a kill.

    Weights, optimizer, the batch-order generator, the global torch RNG, the
    input policy's statistics and the history so far, written atomically to
    ``path`` (nothing is saved when it is None). A state written under another
    ``fingerprint`` (other settings) or unreadable is ignored with a warning.
    """

    path: Path | None
    fingerprint: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    policy: InputPolicy

    def __post_init__(self) -> None:
        self.path = Path(self.path) if self.path is not None else None

    def restore(self, epochs: int) -> tuple[list[dict], int]:
        """Load a matching state if there is one; return (history, first epoch to run)."""
        state = self._load() if self.path is not None else None
        if state is None:
            return [], 1
        if state.get("fingerprint") != self.fingerprint:
            log.warning("resume state %s belongs to other settings; starting from the first epoch", self.path)
            return [], 1
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.policy.load_state_dict(state["policy"])
        first_epoch = int(state["epoch"]) + 1
        log.info("resuming from %s after epoch %d of %d", self.path, first_epoch - 1, epochs)
        return list(state["history"]), first_epoch

    def save(self, epoch: int, history: list[dict]) -> None:
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
            "history": history,
        }
        with atomic_path(self.path) as tmp:
            torch.save(state, tmp)

    def _load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            return torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt state is not worth failing over: start afresh
            log.warning("ignoring unreadable resume state %s (%s); starting from the first epoch", self.path, exc)
            return None


def train_model(
    model: nn.Module,
    data: ImageSplit,
    policy: InputPolicy,
    settings: TrainSettings,
    device: torch.device,
    resume_path: str | Path | None = None,
    fingerprint: str = "",
    on_epoch_end: Callable[[int], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place on ``data`` and return one history row per epoch.

    With ``resume_path``, state (weights, optimizer, RNGs, policy statistics,
    history) is written there at the end of every epoch, and a run that finds
    a state with the same ``fingerprint`` resumes after its last epoch. The
    caller deletes the state once the final checkpoint is written.
    Raises :class:`TrainingDivergedError` if the loss stops being finite.
    """
    model.to(device)
    arithmetic = settings.arithmetic(device, model)
    log.info("arithmetic: %s", arithmetic)
    if arithmetic.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(_parameter_groups(model, settings), lr=settings.lr, momentum=settings.momentum)
    scaler = arithmetic.grad_scaler(device)
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(data)
    per_epoch = math.ceil(n / settings.batch_size)
    total = per_epoch * settings.epochs
    epoch_state = EpochState(resume_path, fingerprint, model, optimizer, generator, policy)
    history, first_epoch = epoch_state.restore(settings.epochs)

    for epoch in range(first_epoch, settings.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        iteration = (epoch - 1) * per_epoch
        for b, _, x, y in epoch_batches(
            data, order, settings.batch_size, device, f"epoch {epoch}/{settings.epochs} [{policy.name}]"
        ):
            if arithmetic.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            model.eval()
            with arithmetic.autocast(device):
                x_train = policy(model, x, y).detach()
            model.train()
            lr = learning_rate(settings.schedule, settings.lr, iteration, total)
            set_learning_rate(optimizer, lr)
            with arithmetic.autocast(device):
                logits = model(x_train)
            loss = F.cross_entropy(logits.float(), y)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"the training loss became {loss.item()} at epoch {epoch}, batch {b + 1}/{per_epoch} "
                    f"(lr {lr:g}); lower the learning rate or check the data. No checkpoint was written."
                )
            optimizer.zero_grad(set_to_none=True)
            step(loss, optimizer, scaler)
            iteration += 1
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        row = {
            "epoch": epoch,
            "loss": loss_sum / seen,
            "train_accuracy": correct / seen,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        if isinstance(policy, AdversarialInputs):
            row["attack_robust_accuracy"] = policy.robust_accuracy()
        log.info(
            "epoch %d/%d loss %.4f acc %.4f lr %.4g (%.1fs)",
            epoch,
            settings.epochs,
            row["loss"],
            row["train_accuracy"],
            lr,
            row["seconds"],
        )
        history.append(row)
        epoch_state.save(epoch, history)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    model.eval()
    if arithmetic.channels_last:
        model.to(memory_format=torch.contiguous_format)
    return history
