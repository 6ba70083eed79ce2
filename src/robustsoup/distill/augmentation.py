"""The distillation's shifted inputs: AugMix, synthetic corruptions, or both (``distill.augmentation``).

:class:`AugmentInputs` is the input policy of the distillation (and of the fine-tuning baseline, which sees
the same stream): each batch holds clean and shifted images (``clean_fraction``); the robust head learns on
the shifted ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from ..train.policies import CorruptionInputs

AUGMENTATIONS = ("augmix", "corruptions", "augmix+corruptions")


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


__all__ = ["AUGMENTATIONS", "AugmentInputs", "make_augmentation"]
