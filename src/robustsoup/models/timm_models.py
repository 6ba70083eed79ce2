"""ImageNet architectures from timm, built without weights; weights come from a local file.

``resnet50`` and ``vit_base_patch16_224`` are built with
``timm.create_model(name, pretrained=False)`` — timm never reaches the
network — and take their weights from a file the user provides
(:func:`robustsoup.models.zoo.load_weights_file`: ``.safetensors`` as timm's
hub ships them, or a ``.pt``/``.pth`` state dict loaded with
``weights_only=True``). Their input statistics are those of timm's default
weights for the name (ImageNet mean/std for resnet50, 0.5/0.5 for the
augreg ViT), so a model takes [0,1] pixels like every other model here.
"""

from __future__ import annotations

from functools import cache

from torch import nn

from .registry import FIXED_INPUT_STATISTICS, register_architecture

TIMM_ARCHITECTURES = ("resnet50", "vit_base_patch16_224")


def _timm():
    try:
        import timm
    except ImportError as exc:  # pragma: no cover - timm is a pinned dependency
        raise ImportError("timm ImageNet architectures need timm: pip install timm==1.0.9") from exc
    return timm


@cache
def timm_input_statistics(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of timm's default pretrained configuration of ``name``."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise KeyError(f"timm has no pretrained configuration for {name!r}")
    return tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std)


def build_timm(name: str, num_classes: int) -> nn.Module:
    """A timm model with random weights (``pretrained=False``: nothing is downloaded)."""
    return _timm().create_model(name, pretrained=False, num_classes=num_classes)


def _register(name: str) -> None:
    def builder(num_classes: int, width: int | None = None, activation: str | None = None) -> nn.Module:
        # width / activation apply to the ResNets built here; a timm model has its own.
        return build_timm(name, num_classes)

    builder.__doc__ = f"timm {name} (pretrained=False; weights from a local file). width/activation are ignored."
    register_architecture(name)(builder)
    FIXED_INPUT_STATISTICS[name] = lambda: timm_input_statistics(name)


for _name in TIMM_ARCHITECTURES:
    _register(_name)
