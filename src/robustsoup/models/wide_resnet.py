"""Wide ResNets (Zagoruyko & Komodakis 2016) in the form the robustness literature uses.

WRN-28-10: a 3×3 stem with 16 channels, three stages of four pre-activation
blocks with 16·k, 32·k and 64·k channels (k = 10), strides 1, 2, 2, then
BN → activation → global average pooling → linear. The parameter names
(``block1.layer.0.conv1``, ``convShortcut``, ``bn1``, ``fc`` …) are those of
the TRADES / RobustBench checkpoints, so their WRN-28-10 weights load
directly (:func:`robustsoup.state_dicts.load_foreign_state_dict`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .preact_resnet import make_activation


class WideBlock(nn.Module):
    """BN → act → conv3×3 (stride) → BN → act → conv3×3, plus an identity or 1×1 shortcut.

    When the shape changes, the shortcut starts from the pre-activated input
    (as in the original WRN code); otherwise it is the raw input.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = make_activation(activation)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = make_activation(activation)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes and stride == 1
        self.convShortcut = (
            None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv1(activated)
        out = self.conv2(self.relu2(self.bn2(out)))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class WideStage(nn.Module):
    """``n`` blocks; only the first changes width and stride."""

    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int, activation: str) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, activation)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen`` on [0,1]-normalized inputs (normalization is the ``Normalized`` wrapper's)."""

    def __init__(self, depth: int = 28, widen: int = 10, num_classes: int = 10, activation: str = "relu") -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"a Wide ResNet's depth must be 6n + 4 (e.g. 28), found {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = WideStage(n, widths[0], widths[1], 1, activation)
        self.block2 = WideStage(n, widths[1], widths[2], 2, activation)
        self.block3 = WideStage(n, widths[2], widths[3], 2, activation)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = make_activation(activation)
        self.fc = nn.Linear(widths[3], num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        return self.fc(F.adaptive_avg_pool2d(out, 1).flatten(1))
