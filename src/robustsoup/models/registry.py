"""Architecture registry: a name maps to a constructor; normalization lives in the model."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from .preact_resnet import PreActResNet


class Normalized(nn.Module):
    """Wrap a network so that it takes images in [0,1] pixel space.

    ``mean`` and ``std`` are non-persistent buffers: they are not part of the
    state dict, so weight algebra never touches them; they come from the data
    set spec recorded in the checkpoint's sidecar.
    """

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator adding a constructor ``(num_classes, width, activation) -> nn.Module``."""

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        ARCHITECTURES[name] = builder
        return builder

    return decorate


@register_architecture("preact_resnet_small")
def preact_resnet_small(num_classes: int, width: int = 16, activation: str = "relu") -> nn.Module:
    """Three stages of one pre-activation block each: 8 weight layers."""
    return PreActResNet((1, 1, 1), width=width, num_classes=num_classes, activation=activation)


@register_architecture("preact_resnet18")
def preact_resnet18(num_classes: int, width: int = 64, activation: str = "softplus") -> nn.Module:
    """PreAct ResNet-18 of robust-finetuning (Croce & Hein 2022): [2,2,2,2], 64…512."""
    return PreActResNet((2, 2, 2, 2), width=width, num_classes=num_classes, activation=activation)


def build_model(
    architecture: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    **kwargs,
) -> Normalized:
    """Build ``architecture`` wrapped with input normalization (inputs in [0,1])."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise KeyError(f"unknown architecture {architecture!r}; registered: {sorted(ARCHITECTURES)}") from None
    return Normalized(builder(num_classes=num_classes, **kwargs), mean=mean, std=std)
