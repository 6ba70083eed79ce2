"""The oracle-free mode's corruption detector: shallow features of a batch and a logistic regression on them.

:class:`ShallowFeatures` summarizes the outputs of a signature's weight layers per channel (mean and
standard deviation); :func:`fit_detector` fits a multinomial logistic regression on those features of the
adaptation images, and :func:`detector_probabilities` gives its class probabilities; :func:`route_batches` picks
a class per batch from them and :func:`tune_lambda` each signature's λ; the stage that picks a
signature per batch with it is :func:`robustsoup.rws.stages.rws_oracle_free`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch


class ShallowFeatures:
    """Per-channel mean and standard deviation of the outputs of the signature's weight layers."""

    def __init__(self, model: torch.nn.Module, layers: Sequence[str]):
        modules = dict(model.named_modules())
        missing = [name for name in layers if name not in modules]
        if missing:
            raise ValueError(f"the model has no modules {missing}; the signature is for another architecture")
        self.model, self.layers, self.modules = model, list(layers), [modules[name] for name in layers]

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        parts: list[torch.Tensor] = []
        out = []
        hooks = [m.register_forward_hook(lambda _m, _i, o: parts.append(o)) for m in self.modules]
        try:
            for start in range(0, len(x), batch_size):
                parts.clear()
                self.model(x[start : start + batch_size])
                feats = []
                for o in parts:
                    flat = o.flatten(2) if o.dim() > 2 else o.unsqueeze(-1)
                    feats += [flat.mean(-1), flat.std(-1, unbiased=False)] if flat.shape[-1] > 1 else [flat.mean(-1)]
                out.append(torch.cat(feats, 1).cpu())
        finally:
            for hook in hooks:
                hook.remove()
        return torch.cat(out)


def fit_detector(
    features: torch.Tensor, labels: torch.Tensor, classes: int, weight_decay: float, steps: int
) -> dict[str, torch.Tensor]:
    """Multinomial logistic regression on standardized features (full-batch L-BFGS, deterministic)."""
    mean, std = features.mean(0), features.std(0).clamp_min(1e-6)
    z = ((features - mean) / std).double()
    weight = torch.zeros(z.shape[1], classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(z @ weight + bias, labels) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return {"mean": mean.double(), "std": std.double(), "weight": weight.detach(), "bias": bias.detach()}


def detector_probabilities(detector: Mapping[str, torch.Tensor], features: torch.Tensor) -> torch.Tensor:
    z = (features.double() - detector["mean"]) / detector["std"]
    return torch.softmax(z @ detector["weight"] + detector["bias"], dim=1)


def tune_lambda(correct: Sequence[int], lambdas: Sequence[float]) -> float:
    """The λ of ``lambdas`` with the most ``correct`` images (one count per λ); ties → the smaller λ."""
    return -max(zip(correct, (-coefficient for coefficient in lambdas)))[1]


def route_batches(probabilities: torch.Tensor, batch_size: int, classes: Sequence) -> list:
    """Per batch of ``batch_size`` consecutive images (the last may be short): the class of ``classes``
    with the highest mean probability over the batch (its images' rows of ``probabilities``)."""
    means = [part.mean(0) for part in probabilities.split(batch_size)]
    return [classes[int(mean.argmax())] for mean in means]
