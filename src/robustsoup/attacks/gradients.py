"""Input gradients of the training attacks, safe under fp16 autocast.

Under fp16 autocast the gradient of a confidently classified image underflows: the cross-entropy's gradient
with respect to the logits, softmax − one-hot, is below fp16's smallest number (6·10⁻⁸) once the
image's loss is below about 10⁻⁷, and the backward pass through the fp16 network then gives exactly 0, so
the attack does not move that image. GradScaler's fix for training, one scale for the whole loss, cannot
serve here: the images of a batch differ by many orders of magnitude, and a scale large enough for the
confident ones overflows the misclassified ones (whose logit gradients are of order 1). Each image's loss
is therefore multiplied by its own scale, 1 / max |softmax − one-hot| (computed in float32 from the
logits), so that every image's largest logit gradient is 1, as for a misclassified image, and the input
gradient is divided back in float32. Every attack step uses the gradient per image up to scale (its
sign, its direction, its top coordinates), so the step is the one float32 arithmetic would take.
"""

from __future__ import annotations

import torch

_SMALLEST = 1e-30  # floor of the logit gradient a scale is computed from (float32)


def fp16_autocast() -> bool:
    """Whether the code runs inside an fp16 autocast region (on CUDA or on the CPU)."""
    return any(
        torch.is_autocast_enabled(kind) and torch.get_autocast_dtype(kind) == torch.float16 for kind in ("cuda", "cpu")
    )


def input_gradient(loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """∂ Σ ``loss`` / ∂ ``inputs`` for per-image cross-entropy ``loss`` of ``logits`` against ``y``.

    Under fp16 autocast each image's loss is scaled before the backward pass (see the module docstring);
    elsewhere this is ``torch.autograd.grad`` of the summed loss."""
    if not fp16_autocast():
        return torch.autograd.grad(loss.sum(), inputs)[0]
    with torch.no_grad():
        slope = logits.detach().float().softmax(1)
        slope[torch.arange(len(y), device=slope.device), y] -= 1.0
        scale = 1.0 / slope.abs().amax(1).clamp_min(_SMALLEST)
    grad = torch.autograd.grad((loss.float() * scale).sum(), inputs)[0]
    return grad / scale.view(-1, *[1] * (grad.dim() - 1)).to(grad.dtype)
