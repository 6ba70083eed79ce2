"""Architecture registry: a name maps to a constructor; normalization lives in the model."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from ..naming import ZOO_PREFIX
from .named import build_named, named_input_statistics, split_name
from .preact_resnet import PreActResNet
from .wide_resnet import WideResNet


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

# Architectures whose input statistics come with their weights, not the data set.
FIXED_INPUT_STATISTICS: dict[str, Callable[[], tuple[tuple[float, ...], tuple[float, ...]]]] = {}
# (x − 0) / 1: for networks that take raw [0,1] pixels (RobustBench's, robust-finetuning's).
IDENTITY_STATISTICS: tuple[tuple[float, ...], tuple[float, ...]] = ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
# Builders of the networks a prefix names (``robustbench:<name>``, registered by :mod:`.zoo`): ``(name,
# num_classes=…, **kwargs) -> nn.Module``.
PREFIX_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


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
    """PreAct ResNet-18, [2,2,2,2], 64…512, in our variant: ``activation`` after the last BatchNorm
    too, inputs normalized with the data set's statistics, our module names.

    robust-finetuning's own network is :func:`preact_resnet18_rf`.
    """
    return PreActResNet((2, 2, 2, 2), width=width, num_classes=num_classes, activation=activation)


@register_architecture("preact_resnet18_rf")
def preact_resnet18_rf(num_classes: int, width: int = 64, activation: str = "softplus") -> nn.Module:
    """robust-finetuning's PreAct ResNet-18 (fra31/robust-finetuning, ``model_zoo/fast_models.py``).

    ``activation`` inside the blocks (their ``softplus1`` is ``softplus``), ReLU after the last
    BatchNorm whatever ``activation`` is, no input normalization (identity statistics, see
    :data:`FIXED_INPUT_STATISTICS`), their average-pooling operation and their module names
    (``layer1`` … ``layer4``, ``shortcut.0``), so that their ``.pth`` state dicts load without a
    key map and give their logits bit for bit on 32×32 inputs. Their network has ``width`` 64;
    other widths scale it.
    """
    return PreActResNet(
        (2, 2, 2, 2),
        width=width,
        num_classes=num_classes,
        activation=activation,
        final_activation="relu",
        reference_layout=True,
        pooling="window",
    )


FIXED_INPUT_STATISTICS["preact_resnet18_rf"] = lambda: IDENTITY_STATISTICS


def input_statistics(
    architecture: str, mean: Sequence[float], std: Sequence[float]
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std a model of ``architecture`` normalizes its input with.

    The data set's by default; architectures whose weights expect fixed
    statistics (timm's ViT: 0.5 / 0.5; RobustBench models, which normalize
    inside, and robust-finetuning's PreAct ResNet-18, which does not
    normalize: identity) say so in :data:`FIXED_INPUT_STATISTICS`.
    """
    fixed = FIXED_INPUT_STATISTICS.get(architecture)
    if fixed is None and split_name(architecture) is not None:  # timm:<name>, torchvision:<name>
        return named_input_statistics(architecture)
    if fixed is None and architecture.startswith(ZOO_PREFIX):
        fixed = FIXED_INPUT_STATISTICS[ZOO_PREFIX]
    if fixed is not None:
        return fixed()
    return tuple(mean), tuple(std)


@register_architecture("wrn28_10")
def wrn28_10(num_classes: int, width: int = 160, activation: str = "relu") -> nn.Module:
    """WRN-28-10 as in the robustness literature (TRADES / RobustBench parameter names).

    ``width`` is the first stage's channels, 16·k: 160 gives WRN-28-10
    (stages 160/320/640); 16 gives WRN-28-1.
    """
    if width % 16:
        raise ValueError(f"wrn28_10: width must be a multiple of 16 (16·k for WRN-28-k), found {width}")
    return WideResNet(depth=28, widen=width // 16, num_classes=num_classes, activation=activation)


def _build_model(
    architecture: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    **kwargs,
) -> Normalized:
    """Build ``architecture`` wrapped with input normalization (inputs in [0,1]).

    ``robustbench:<name>`` builds a RobustBench model-zoo architecture
    (without weights; see :mod:`robustsoup.models.zoo`).
    """
    if architecture.startswith(ZOO_PREFIX):
        net = PREFIX_BUILDERS[ZOO_PREFIX](architecture[len(ZOO_PREFIX) :], num_classes=num_classes, **kwargs)
    elif split_name(architecture) is not None:  # width / activation are the library's own
        net = build_named(architecture, num_classes)
    else:
        try:
            builder = ARCHITECTURES[architecture]
        except KeyError:
            raise KeyError(
                f"unknown architecture {architecture!r}; registered: {sorted(ARCHITECTURES)} "
                f"or {ZOO_PREFIX}<model-zoo name>, timm:<name>, torchvision:<name>"
            ) from None
        net = builder(num_classes=num_classes, **kwargs)
    mean, std = input_statistics(architecture, mean, std)
    return Normalized(net, mean=mean, std=std)
