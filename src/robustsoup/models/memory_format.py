"""A model computing in channels_last for the length of a block, its tensors as they were after.

Every evaluation of a model (clean, corrupted and adversarial) runs through
:func:`computing_in` with the config's ``evaluate.channels_last``, resolved by
:func:`robustsoup.device.resolve_channels_last`: oneDNN's and cuDNN's
convolutions are faster in channels_last (1.5× a float32 forward pass of the
default model on an AVX-512 CPU). The memory format changes no formula, only
the order of the additions inside the convolutions (outputs and input
gradients move in the 7th significant digit).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ChannelsLastInput(nn.Module):
    """``model`` fed its input in channels_last (its convolution weights converted by :func:`computing_in`)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


@contextlib.contextmanager
def computing_in(model: nn.Module, channels_last: bool) -> Iterator[nn.Module]:
    """``model`` computing in channels_last while the block runs (when ``channels_last``; else ``model`` itself).

    Yields the model to call (it converts its input too). Afterwards every 4-d parameter and buffer holds the
    tensor it held before, with its strides: what the block wrote to the weights is dropped, so the block
    only reads them."""
    if not channels_last:
        yield model
        return
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.dim() == 4]
    before = [t.data for t in tensors]
    model.to(memory_format=torch.channels_last)
    try:
        wrapped = ChannelsLastInput(model)
        wrapped.training = model.training  # the caller's mode, unchanged
        yield wrapped
    finally:
        for tensor, data in zip(tensors, before):
            tensor.data = data
