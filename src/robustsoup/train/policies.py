"""Input policies: what a training batch becomes before the model is updated on it: the batch as it
is (:class:`CleanInputs`), attacked in one of several Lp threat models (:class:`AdversarialInputs`), or
corrupted per image (:class:`CorruptionInputs`). :func:`robustsoup.train.loop.run_epochs` calls them and
:class:`robustsoup.train.distributed.RankPolicy` makes them rank-consistent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import nn

from ..attacks import pgd_attack
from ..attacks.apgd import apgd_train
from ..attacks.projections import NORMS
from ..data.corruptions import CORRUPTIONS, SEVERITIES, corrupt_groups

TRAINING_ATTACKS = ("apgd", "pgd")


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
        n = len(x)
        which = torch.randint(len(self.corruptions), (n,), generator=self.generator)
        level = torch.randint(len(self.severities), (n,), generator=self.generator)
        clean = torch.rand(n, generator=self.generator) < self.clean_fraction
        images = (x.detach().cpu() * 255).round().to(torch.uint8)
        groups = [
            (((which == c) & (level == s) & ~clean).nonzero().flatten().tolist(), name, severity)
            for c, name in enumerate(self.corruptions)
            for s, severity in enumerate(self.severities)
        ]
        # every (corruption, severity) group of the batch at once, on the job's threads: the same bytes as one by one
        out = corrupt_groups(images, groups, seed=self.seed, index_offset=self.batches * n)
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
