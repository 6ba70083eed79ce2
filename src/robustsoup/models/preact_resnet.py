"""Pre-activation ResNets (He et al. 2016), ours and robust-finetuning's.

One class, :class:`PreActResNet`, with the options in which the variants differ:

- ``activation``: the activation inside the blocks (``relu`` or ``softplus`` with β=1);
- ``final_activation``: the activation after the last BatchNorm (None: the same as inside);
- ``reference_layout``: robust-finetuning's module names, so that its state dicts load as they are:
  stages ``layer1`` … ``layerN`` and a 1×1 shortcut wrapped as ``shortcut.0``; otherwise all
  blocks sit in one ``layers`` sequence and the shortcut is ``shortcut``;
- ``pooling``: how the last feature map is averaged. ``adaptive`` (``adaptive_avg_pool2d``) or
  ``window`` (``avg_pool2d`` with a window the size of the map: robust-finetuning's operation,
  whose fixed 4×4 window is the whole map on 32×32 inputs; the two differ in float rounding).

Input normalization is not part of the network: :class:`robustsoup.models.registry.Normalized`
wraps it with the statistics the architecture says (robust-finetuning's network takes raw
[0,1] pixels). The registry's names fix the options: ``preact_resnet_small`` (the embedded
default, three stages of one block), ``preact_resnet18`` (ours: the same activation after the
last BatchNorm, data-set normalization) and ``preact_resnet18_rf`` (the authors' network,
``model_zoo/fast_models.py`` of fra31/robust-finetuning).
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
    """BN → act → conv3×3 → BN → act → conv3×3, with a 1×1 shortcut from the activated input when shapes change.

    ``wrapped_shortcut`` puts that 1×1 convolution in a one-element ``nn.Sequential``
    (state-dict key ``shortcut.0.weight``, robust-finetuning's name); the computation is the same.
    """

    def __init__(
        self, in_planes: int, planes: int, stride: int, activation: str, wrapped_shortcut: bool = False
    ) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.act = make_activation(activation)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            conv = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)
            self.shortcut = nn.Sequential(conv) if wrapped_shortcut else conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(self.act(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """Pre-activation ResNet: conv3×3 stem, stages of :class:`PreActBlock`, BN → act → global average pool → linear.

    Stage ``s`` has ``width·2^s`` channels and starts with stride 2 (except the first). Takes
    inputs already normalized (see :class:`robustsoup.models.registry.Normalized`).
    """

    def __init__(
        self,
        blocks_per_stage: tuple[int, ...],
        width: int,
        num_classes: int,
        activation: str = "relu",
        final_activation: str | None = None,
        reference_layout: bool = False,
        pooling: str = "adaptive",
    ) -> None:
        super().__init__()
        if pooling not in ("adaptive", "window"):
            raise ValueError(f"unknown pooling {pooling!r}; expected 'adaptive' or 'window'")
        self.pooling = pooling
        self.conv1 = nn.Conv2d(3, width, 3, stride=1, padding=1, bias=False)
        stages: list[list[PreActBlock]] = []
        in_planes = width
        for stage, n_blocks in enumerate(blocks_per_stage):
            planes = width * 2**stage
            blocks = []
            for block in range(n_blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                blocks.append(PreActBlock(in_planes, planes, stride, activation, wrapped_shortcut=reference_layout))
                in_planes = planes
            stages.append(blocks)
        if reference_layout:
            self.stage_names = tuple(f"layer{s + 1}" for s in range(len(stages)))
            for name, blocks in zip(self.stage_names, stages, strict=True):
                self.add_module(name, nn.Sequential(*blocks))
        else:
            self.stage_names = ("layers",)
            self.layers = nn.Sequential(*(block for blocks in stages for block in blocks))
        self.bn = nn.BatchNorm2d(in_planes)
        self.act = make_activation(final_activation or activation)
        self.linear = nn.Linear(in_planes, num_classes)

    def block_names(self) -> list[str]:
        """Module paths of the residual blocks, in order (``layers.3``, or ``layer2.1`` in the reference layout)."""
        return [f"{stage}.{i}" for stage in self.stage_names for i in range(len(getattr(self, stage)))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        for stage in self.stage_names:
            out = getattr(self, stage)(out)
        out = self.act(self.bn(out))
        if self.pooling == "window":
            out = F.avg_pool2d(out, tuple(out.shape[-2:]))
        else:
            out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.flatten(1))
