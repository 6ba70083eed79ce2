"""Pre-activation ResNets (He et al. 2016), as used by robust-finetuning.

``preact_resnet18`` follows Croce & Hein (2022): widths 64/128/256/512, two
blocks per stage, softplus (β=1) activations by default in their code.
``preact_resnet_small`` is the embedded default's network: three stages of one
block each (8 weight layers), trainable adversarially on a CPU in minutes.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def make_activation(name: str) -> nn.Module:
    """``relu`` or ``softplus`` (β=1, robust-finetuning's choice)."""
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        return nn.Softplus(beta=1.0)
    raise ValueError(f"unknown activation {name!r}; expected 'relu' or 'softplus'")


class PreActBlock(nn.Module):
    """BN → act → conv3×3 → BN → act → conv3×3, with a 1×1 shortcut when shapes change."""

    def __init__(self, in_planes: int, planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.act = make_activation(activation)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet on [0,1]-normalized inputs (normalization is a separate wrapper)."""

    def __init__(
        self,
        blocks_per_stage: tuple[int, ...],
        width: int,
        num_classes: int,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        stages = []
        in_planes = width
        for stage, n_blocks in enumerate(blocks_per_stage):
            planes = width * 2**stage
            for block in range(n_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                stages.append(PreActBlock(in_planes, planes, stride, activation))
                in_planes = planes
        self.layers = nn.Sequential(*stages)
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = make_activation(activation)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(x))
        out = self.act(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)
