"""The multi-head student's surgery: its state from the original student's, what is frozen, which mode.

The student (:class:`robustsoup.models.multihead.MultiHeadNet`) is the original student's base with three
copies of its classifier as heads; only the last block(s) and the heads are tuned, the frozen layers stay
in eval mode.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..models import Normalized
from ..models.multihead import HEADS, MultiHeadNet


def multihead_net(model: Normalized) -> MultiHeadNet:
    net = getattr(model, "net", None)
    if not isinstance(net, MultiHeadNet):
        raise TypeError(f"expected a multi-head student (architecture multihead), found {type(net).__name__}")
    return net


def multihead_state_from_student(
    student_state: Mapping[str, torch.Tensor], net: MultiHeadNet, prefix: str = "net."
) -> dict[str, torch.Tensor]:
    """The multi-head student's state dict from the original student's: the base as it is, every head
    a copy of the original classifier."""
    classifier = prefix + net.classifier_name + "."
    state = {}
    for key, tensor in student_state.items():
        if key.startswith(classifier):
            for head in HEADS:
                state[f"{prefix}heads.{head}.{key[len(classifier) :]}"] = tensor.clone()
        elif key.startswith(prefix):
            state[f"{prefix}base.{key[len(prefix) :]}"] = tensor.clone()
        else:
            state[key] = tensor.clone()
    return state


def freeze_for_distillation(model: Normalized) -> list[str]:
    """Freeze every parameter except the multi-head net's trainable ones; return the names (model-level)."""
    net = multihead_net(model)
    tuned = set(net.trainable_names())
    names = []
    for name, parameter in net.named_parameters():
        parameter.requires_grad_(name in tuned)
        if name in tuned:
            names.append(f"net.{name}")
    return names


def set_distillation_mode(model: Normalized, batchnorm: str = "train") -> None:
    """Eval mode everywhere (frozen BatchNorm statistics), except, with ``batchnorm="train"``, the tuned
    blocks, whose BatchNorm layers then normalise with batch statistics and update their running ones."""
    net = multihead_net(model)
    model.eval()
    if batchnorm == "train":
        for name in net.trainable_modules:
            net.get_submodule(name).train()


def normalized_input(model: Normalized, x: torch.Tensor) -> torch.Tensor:
    """``x`` in [0, 1] pixel space as the wrapped network sees it: (x − mean) / std."""
    return (x - model.mean) / model.std


__all__ = [
    "freeze_for_distillation",
    "multihead_net",
    "multihead_state_from_student",
    "normalized_input",
    "set_distillation_mode",
]
