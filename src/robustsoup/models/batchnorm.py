"""Re-estimating BatchNorm statistics of a model whose weights were mixed."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def recompute_batchnorm_statistics(
    model: nn.Module, images: torch.Tensor, batch_size: int = 128, device: torch.device | str = "cpu"
) -> int:
    """Replace every BatchNorm's running mean and variance by their values on ``images``.

    ``images`` are uint8 (N, C, H, W); statistics are exact averages over the
    batches (momentum None), not exponential ones. Returns the number of
    BatchNorm layers reset; the model is left in eval mode.
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved_momentum = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
    model.to(device).train()
    for start in range(0, len(images), batch_size):
        model(images[start : start + batch_size].to(device).float().div_(255.0))
    for layer, momentum in zip(layers, saved_momentum):
        layer.momentum = momentum
    model.eval()
    return len(layers)
