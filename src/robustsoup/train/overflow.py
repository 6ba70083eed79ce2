"""What a loss that is not finite means to the epoch loop: divergence, or under fp16 an overflow to skip.

In float32 and bf16 a loss that becomes NaN or infinite means the training diverged
(:class:`~robustsoup.train.loop.TrainingDivergedError`). Under fp16 it is usually an overflow of
fp16's range (65504) in one batch's forward pass, which the loss scaler is made for: its backward pass
gives non-finite gradients, :class:`torch.amp.GradScaler` skips that optimizer step and halves its scale,
and training goes on (as torch's automatic mixed precision does). Only :data:`MAX_SKIPPED_IN_A_ROW`
such batches in a row count as divergence.
"""

from __future__ import annotations

import math

MAX_SKIPPED_IN_A_ROW = 10


class LossGuard:
    """Decides, batch by batch, whether a non-finite loss is a step the fp16 ``scaler`` skips (None: never)."""

    def __init__(self, scaler) -> None:
        self.scaler = scaler
        self.in_a_row = 0
        self.skipped = 0  # this epoch's

    def begin_epoch(self) -> None:
        self.skipped = 0

    def skips(self, value: float) -> bool:
        """True when the batch's loss ``value`` is not finite and the scaler will skip its step."""
        if math.isfinite(value):
            self.in_a_row = 0
            return False
        if self.scaler is None or self.in_a_row >= MAX_SKIPPED_IN_A_ROW:
            return False
        self.in_a_row += 1
        self.skipped += 1
        return True

    def record(self) -> dict:
        """The history row's entry (fp16 only): steps skipped for an overflow this epoch, and the scale."""
        if self.scaler is None:
            return {}
        return {"skipped_steps": self.skipped, "loss_scale": float(self.scaler.get_scale())}
