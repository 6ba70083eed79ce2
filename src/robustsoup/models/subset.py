"""Evaluate an ImageNet classifier on a 200-class subset (ImageNet-R, ImageNet-A)."""

from __future__ import annotations

import torch
from torch import nn


class RestrictedLogits(nn.Module):
    """``model`` with its logits restricted to a subset of classes, in the subset's label order.

    ``indices[j]`` is the model's class for label j (e.g.
    ``robustsoup.data.subset_indices("imagenet-r")``). Wrapping the model
    keeps clean accuracy, attacks and soups on one code path: the wrapper
    has no parameters of its own (``indices`` is a non-persistent buffer),
    so its state dict is the model's with a ``model.`` prefix.
    """

    def __init__(self, model: nn.Module, indices: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("indices", torch.as_tensor(indices, dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).index_select(-1, self.indices)
