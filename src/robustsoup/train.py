"""One training loop; what perturbs a batch is a pluggable input policy.

The loop knows nothing of the papers: pre-training and every fine-tune are
this loop with another policy, schedule and starting point. SGD with
momentum and weight decay, a learning rate updated every iteration, the
model in eval mode while the policy attacks and in train mode for the update
(as robust-finetuning does).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from .attacks import pgd_attack
from .data import ImageSplit

log = logging.getLogger(__name__)


class InputPolicy(Protocol):
    """Maps a clean batch to the batch the model is updated on."""

    name: str

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor: ...


@dataclass
class CleanInputs:
    """Nominal training: the batch as it is."""

    name: str = "clean"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return x


@dataclass
class AdversarialInputs:
    """Adversarial training: PGD in the ``norm`` ball of radius ``eps`` (pixel space)."""

    norm: str
    eps: float
    steps: int
    generator: torch.Generator | None = None
    name: str = field(init=False)

    def __post_init__(self) -> None:
        self.name = f"pgd-{self.norm}(eps={self.eps:g},{self.steps} steps)"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return pgd_attack(model, x, y, self.norm, self.eps, self.steps, generator=self.generator)


def make_input_policy(norm: str, eps: float | None, steps: int, seed: int) -> InputPolicy:
    """``norm='none'`` gives clean training, otherwise PGD adversarial training."""
    if norm == "none":
        return CleanInputs()
    if eps is None:
        raise ValueError(f"adversarial training against {norm} needs an ε")
    return AdversarialInputs(norm, eps, steps, generator=torch.Generator().manual_seed(seed + 1))


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
    """Optimisation settings of one training run (see the config schema)."""

    epochs: int
    lr: float
    schedule: str = "piecewise-ft"
    batch_size: int = 128
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


def train_model(
    model: nn.Module,
    data: ImageSplit,
    policy: InputPolicy,
    settings: TrainSettings,
    device: torch.device,
) -> list[dict]:
    """Train ``model`` in place on ``data`` and return one history row per epoch.

    Each row holds the epoch, mean training loss and accuracy on the
    policy's inputs, the last learning rate and the epoch's wall time.
    """
    model.to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
    )
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(data)
    per_epoch = math.ceil(n / settings.batch_size)
    total = per_epoch * settings.epochs
    history = []
    iteration = 0
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator)
        loss_sum, correct, seen = 0.0, 0, 0
        batches = tqdm(
            range(per_epoch), desc=f"epoch {epoch}/{settings.epochs} [{policy.name}]",
            file=sys.stderr, mininterval=10, leave=True,
        )
        for b in batches:
            idx = order[b * settings.batch_size : (b + 1) * settings.batch_size]
            x = data.images[idx].to(device).float().div_(255.0)
            y = data.labels[idx].to(device)
            model.eval()
            x_train = policy(model, x, y)
            model.train()
            lr = learning_rate(settings.schedule, settings.lr, iteration, total)
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits = model(x_train)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
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
        log.info("epoch %d/%d loss %.4f acc %.4f lr %.4g (%.1fs)", epoch, settings.epochs,
                 row["loss"], row["train_accuracy"], lr, row["seconds"])
        history.append(row)
    model.eval()
    return history
