"""Any timm or torchvision architecture by name: ``timm:<name>``, ``torchvision:<name>``.

The network is built without weights (``timm.create_model(name, pretrained=False,
num_classes=…)``, ``torchvision.models.get_model(name, weights=None, num_classes=…)``),
so nothing is downloaded, with the run's class count. It normalizes its input with the
statistics of the name's pretrained configuration (timm's ``pretrained_cfg``, torchvision's
default weights' transform), so that weights trained elsewhere see the input they were
trained on; weights come only from a local file (config ``model.weights``), and a file whose
classifier head has another class count gets a new head (:func:`load_with_new_head`).
An unknown name fails with the nearest names the library has (difflib).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from functools import cache

import torch
from torch import nn

log = logging.getLogger(__name__)

LIBRARIES = ("timm", "torchvision")
IMAGENET_STATISTICS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def split_name(architecture: str) -> tuple[str, str] | None:
    """``("timm", "resnet18")`` for ``timm:resnet18``; None for any other architecture."""
    library, sep, name = architecture.partition(":")
    return (library, name) if sep and library in LIBRARIES else None


@cache
def _names(library: str) -> tuple[str, ...]:
    if library == "timm":
        import timm

        return tuple(timm.list_models())
    from torchvision.models import list_models

    return tuple(list_models())


def check_name(library: str, name: str) -> None:
    """Raise KeyError for a name ``library`` does not have, listing the nearest ones."""
    names = _names(library)
    if name in names:
        return
    near = difflib.get_close_matches(name, names, n=8, cutoff=0.5)
    raise KeyError(
        f"model.architecture: {library} has no architecture {name!r}; nearest names: "
        f"{', '.join(near) if near else '(none close)'} (all {len(names)}: "
        + ("timm.list_models()" if library == "timm" else "torchvision.models.list_models()")
        + ")"
    )


def build_named(architecture: str, num_classes: int) -> nn.Module:
    """The network of ``timm:<name>`` / ``torchvision:<name>`` with ``num_classes`` outputs, random weights."""
    library, name = split_name(architecture)
    check_name(library, name)
    if library == "timm":
        import timm

        return timm.create_model(name, pretrained=False, num_classes=num_classes)
    from torchvision.models import get_model

    return get_model(name, weights=None, num_classes=num_classes)


@cache
def named_input_statistics(architecture: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std of the pretrained configuration of ``timm:<name>`` / ``torchvision:<name>``
    (ImageNet's where the library has none for the name)."""
    library, name = split_name(architecture)
    if library == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
        if cfg is not None and cfg.mean is not None:
            return tuple(float(m) for m in cfg.mean), tuple(float(s) for s in cfg.std)
        return IMAGENET_STATISTICS
    from torchvision.models import get_model_weights

    try:
        transform = get_model_weights(name).DEFAULT.transforms()
        return tuple(float(m) for m in transform.mean), tuple(float(s) for s in transform.std)
    except (ValueError, AttributeError, KeyError):
        return IMAGENET_STATISTICS


def classifier_keys(net: nn.Module) -> list[str]:
    """State-dict keys of the classifier head of ``net``: timm's ``get_classifier()``, else the last
    ``nn.Linear`` (torchvision's fc, classifier.N, heads.head)."""
    head = net.get_classifier() if hasattr(net, "get_classifier") else None
    named = dict(net.named_modules())
    if not isinstance(head, nn.Linear):
        linears = [m for m in named.values() if isinstance(m, nn.Linear)]
        head = linears[-1] if linears else None
    if head is None:
        return []
    prefix = next(n for n, m in named.items() if m is head)
    return [f"{prefix}.{p}" for p, _ in head.named_parameters()]


def load_with_new_head(
    net: nn.Module, state: Mapping[str, torch.Tensor], source: str
) -> tuple[dict[str, torch.Tensor], dict | None]:
    """``state`` without its classifier head when the head's class count differs from ``net``'s.

    Only the head's keys may differ, and only in their first dimension (the classes); anything
    else is left for the strict load to name. Returns the state to load and a record of the
    replacement for the sidecar (None when nothing was replaced); the new head keeps ``net``'s
    fresh initialisation.
    """
    own = net.state_dict()
    keys = classifier_keys(net)
    differ = [k for k in keys if k in state and k in own and state[k].shape != own[k].shape]
    if not differ or any(state[k].shape[1:] != own[k].shape[1:] for k in differ):
        return dict(state), None
    found, built = int(state[differ[0]].shape[0]), int(own[differ[0]].shape[0])
    record = {"keys": sorted(keys), "file_classes": found, "classes": built, "source": source}
    log.info(
        "weights %s: the classifier head (%s) has %d classes, the model %d: loaded every other tensor, "
        "the head is new (random initialisation)",
        source,
        ", ".join(keys),
        found,
        built,
    )
    return {k: v for k, v in state.items() if k not in keys} | {k: own[k] for k in keys}, record
