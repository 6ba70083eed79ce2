"""The RWS paper's VGG-16 (Cai et al. 2023, Table 4 on CIFAR-10), as its reference code defines it.

VITA-Group/Robust_Weight_Signatures ``models/vgg.py`` builds torchvision's configuration "D"
(13 3×3 convolutions with biases, ReLU, max-pooling after the 2nd, 4th, 7th and 10th) without
BatchNorm and without the last max-pooling, then a global average pool and one linear layer
512 → classes (``vgg16()``, the function ``tools.py`` ``get_model`` calls). Its state-dict keys
are ``features.<i>.weight`` / ``features.<i>.bias`` at the convolutions' positions in the
``features`` sequence and ``classifier.weight`` / ``classifier.bias``; the reference also keeps
its input normalization as buffers ``normalize.mean`` / ``normalize.std`` of the network, set to
the data set's statistics (``tools.py:131-151``). Here normalization is the registry's wrapper
(:class:`robustsoup.models.registry.Normalized`, the data set's statistics, not in the state
dict), so the network's own keys are the reference's without ``normalize.*``.

Initialization as the reference's: convolutions Kaiming-normal (fan-out, ReLU gain), biases 0;
the linear layer N(0, 0.01), bias 0. ``width`` scales the channels (64 is the paper's network).
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_architecture

# Channels of configuration "D" per convolution; "M" a 2×2 max-pool. The reference drops the last pool.
VGG16_LAYOUT: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


class VGG(nn.Module):
    """Convolutions (with biases) and ReLUs in ``features``, global average pool, one linear ``classifier``."""

    def __init__(self, layout: tuple[int | str, ...], num_classes: int, width: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for entry in layout:
            if entry == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out = int(entry) * width // 64
            layers += [nn.Conv2d(channels, out, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.01)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


@register_architecture("vgg16_rws")
def vgg16_rws(num_classes: int, width: int = 64, activation: str = "relu") -> nn.Module:
    """The RWS reference's VGG-16 (no BatchNorm, no last pool, GAP + one linear layer); ReLU only."""
    if activation != "relu":
        raise ValueError(f"vgg16_rws: the reference's VGG-16 uses ReLU, found activation {activation!r}")
    if width < 1 or (width * 8) % 64:
        raise ValueError(f"vgg16_rws: width must make 8·width a multiple of 64 (64 is the paper's), found {width}")
    return VGG(VGG16_LAYOUT, num_classes=num_classes, width=width)
