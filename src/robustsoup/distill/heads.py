"""Head selection at test time: which of the multi-head student's heads answers each input.

At test time each input gets one head (:func:`select_heads`). The signals
(:func:`head_signals`): every head's logits with dropout off; the MC-dropout
uncertainty of every head from ``T`` dropout samples (predictive entropy
normalised by log K, the mean variance of the probabilities, or the mutual
information); and the divergence between the clean and robust heads, the
symmetric KL of their MC-mean predictions. The rules:

- ``clean`` / ``robust`` / ``combined``: always that head (ablations);
- ``oracle``: the first head, in that order, that is correct (an upper bound; needs the labels);
- ``ours``: the clean head when its uncertainty is at most ``θ_u`` *and* the
  heads' divergence is at most ``θ_kl`` (the input looks like clean data and
  the heads agree); otherwise the less uncertain of the robust and combined heads.

The thresholds of ``ours`` come from :func:`robustsoup.distill.calibration.calibrate_thresholds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..device import resolve_arithmetic
from ..models import Normalized
from ..models.memory_format import computing_in
from ..models.multihead import HEADS
from .student import multihead_net, normalized_input

RULES = ("clean", "robust", "combined", "oracle", "ours")
UNCERTAINTIES = ("entropy", "variance", "mutual_information")
_CLEAN, _ROBUST, _COMBINED = (HEADS.index(h) for h in ("clean", "robust", "combined"))


@dataclass
class HeadSignals:
    """What head selection sees of N inputs.

    ``logits`` (H, N, K): each head with dropout off; ``uncertainty`` (H, N):
    each head's MC-dropout uncertainty; ``divergence`` (N,): symmetric KL
    between the clean and robust heads' MC-mean predictions. Heads in the
    order of :data:`HEADS`.
    """

    logits: torch.Tensor
    uncertainty: torch.Tensor
    divergence: torch.Tensor

    def __len__(self) -> int:
        return int(self.logits.shape[1])

    @staticmethod
    def cat(parts: Sequence[HeadSignals]) -> HeadSignals:
        return HeadSignals(
            torch.cat([p.logits for p in parts], 1),
            torch.cat([p.uncertainty for p in parts], 1),
            torch.cat([p.divergence for p in parts]),
        )


def _uncertainty(samples: torch.Tensor, kind: str) -> torch.Tensor:
    """samples (T, N, K) probabilities → (N,) uncertainty."""
    mean = samples.mean(0)
    k = samples.shape[-1]
    entropy = -(mean * mean.clamp_min(1e-12).log()).sum(-1) / math.log(k)
    if kind == "entropy":
        return entropy
    if kind == "variance":
        return samples.var(0, unbiased=False).mean(-1)
    if kind == "mutual_information":
        expected = -(samples * samples.clamp_min(1e-12).log()).sum(-1).mean(0) / math.log(k)
        return (entropy - expected).clamp_min(0)
    raise ValueError(f"unknown uncertainty {kind!r}; expected one of {UNCERTAINTIES}")


def _symmetric_kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    lp, lq = p.clamp_min(1e-12).log(), q.clamp_min(1e-12).log()
    return 0.5 * ((p * (lp - lq)).sum(-1) + (q * (lq - lp)).sum(-1))


@torch.no_grad()
def head_signals(
    model: Normalized,
    x: torch.Tensor,
    samples: int = 8,
    seed: int = 0,
    uncertainty: str = "entropy",
    batch_size: int = 500,
    device="cpu",
    channels_last: bool | str = False,
) -> HeadSignals:
    """Selection signals of images ``x``: see :class:`HeadSignals`; ``channels_last`` (``evaluate.channels_last``)
    the memory format the network computes in.

    ``x`` is [0,1] floats or uint8 images, a tensor or any view that slices into one (a file-list
    split's lazy ``images``: each batch is decoded when it is reached).

    The base runs once per image; the ``samples`` dropout masks act on its
    features, drawn from a generator seeded with ``seed`` on the CPU, so the
    result is the same on every run and device for the same inputs and
    batch size.
    """
    if samples < 1:
        raise ValueError(f"MC-dropout needs at least one sample, found {samples}")
    if uncertainty not in UNCERTAINTIES:
        raise ValueError(f"unknown uncertainty {uncertainty!r}; expected one of {UNCERTAINTIES}")
    net = multihead_net(model)
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(seed)
    keep = 1.0 - net.dropout
    logits, uncert, divergence = [], [], []
    channels_last = resolve_arithmetic("float32", channels_last, device, model).channels_last
    with computing_in(model, channels_last):  # net's weights converted for the loop (its calls follow them)
        for start in range(0, len(x), batch_size):
            batch = x[start : start + batch_size]
            batch = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch
            features = net.features(normalized_input(model, batch.to(device)))
            det, unc, means = [], [], []
            for head in HEADS:
                det.append(net.head(head, features).float().cpu())
                probs = []
                for _ in range(samples):
                    mask = (torch.rand(features.shape, generator=generator) < keep).float().div_(keep)
                    probs.append(net.head(head, features, mask=mask.to(features.device)).float().softmax(-1).cpu())
                probs = torch.stack(probs)
                unc.append(_uncertainty(probs, uncertainty))
                means.append(probs.mean(0))
            logits.append(torch.stack(det))
            uncert.append(torch.stack(unc))
            divergence.append(_symmetric_kl(means[_CLEAN], means[_ROBUST]))
    return HeadSignals(torch.cat(logits, 1), torch.cat(uncert, 1), torch.cat(divergence))


@dataclass(frozen=True)
class Thresholds:
    """``ours``: the clean head when uncertainty ≤ ``uncertainty`` and divergence ≤ ``divergence``."""

    uncertainty: float
    divergence: float


def ours_choice(signals: HeadSignals, thresholds: Thresholds) -> torch.Tensor:
    """Rule ``ours``: the clean head where both signals are within ``thresholds``, else the less uncertain of the
    robust and combined heads (indices into :data:`HEADS`)."""
    u = signals.uncertainty
    keep_clean = (u[_CLEAN] <= thresholds.uncertainty) & (signals.divergence <= thresholds.divergence)
    other = torch.where(u[_ROBUST] <= u[_COMBINED], _ROBUST, _COMBINED)
    return torch.where(keep_clean, torch.full_like(other, _CLEAN), other)


def select_heads(
    signals: HeadSignals, rule: str, thresholds: Thresholds | None = None, labels: torch.Tensor | None = None
) -> torch.Tensor:
    """Index into :data:`HEADS` of the head each input gets under ``rule`` (see the module docstring)."""
    n = len(signals)
    if rule in HEADS:
        return torch.full((n,), HEADS.index(rule), dtype=torch.long)
    if rule == "oracle":
        if labels is None:
            raise ValueError("the oracle rule needs the labels")
        correct = signals.logits.argmax(-1) == labels.view(1, -1)
        first = correct.int().argmax(0)  # first correct head; 0 (clean) when none is
        return first.long()
    if rule == "ours":
        if thresholds is None:
            raise ValueError("the ours rule needs thresholds (calibrate_thresholds)")
        return ours_choice(signals, thresholds).long()
    raise ValueError(f"unknown head-selection rule {rule!r}; expected one of {RULES}")


def selected_predictions(signals: HeadSignals, choice: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,) when input i is answered by head ``choice[i]``."""
    predictions = signals.logits.argmax(-1)  # (H, N)
    return predictions.gather(0, choice.view(1, -1)).squeeze(0)


__all__ = [
    "RULES",
    "UNCERTAINTIES",
    "HeadSignals",
    "Thresholds",
    "head_signals",
    "ours_choice",
    "select_heads",
    "selected_predictions",
]
