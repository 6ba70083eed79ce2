"""train.py's optimisation against fra31/robust-finetuning: piecewise-ft per batch, weight-decay groups, norm sampling.

Golden file: ``golden/robust_finetuning_train.json`` (``tools/parity/gen_robust_finetuning.py``), recorded
from real runs of the reference's ``train.py`` ``main()``: from scratch with APGD over L∞, L2 and L1 (3
epochs of 8 batches, lr-max 0.05), and a fine-tune (1 epoch). Everything here is exact: the learning
rates are the same float expression, the groups are name lists, and the sampling weights are
1 − (robust / seen), computed by the reference in float32 (its counts are tensors) and by ours in
float64, so compared after normalising to 1e-7 (float32 round-off; measured 5.5e-9).
"""

from __future__ import annotations

import pytest
import torch
from parity_golden import load_json

from robustsoup.models.registry import preact_resnet18_rf
from robustsoup.train import loop
from robustsoup.train.loop import TrainSettings, learning_rate
from robustsoup.train.policies import AdversarialInputs

GOLDEN = load_json("robust_finetuning_train")
NORMS = ["Linf", "L2", "L1"]


@pytest.mark.parametrize("run", ["scratch", "finetune"])
def test_piecewise_ft_rate_of_every_batch(run):
    record = GOLDEN["runs"][run]
    settings = record["settings"]
    per_epoch = settings["batches_per_epoch"]
    total = per_epoch * settings["epochs"]
    assert len(record["lr"]) == total
    ours = [learning_rate("piecewise-ft", settings["lr_max"], i, total, per_epoch) for i in range(total)]
    assert ours == [step["lr"] for step in record["lr"]]


def _group_names(run: str) -> list[tuple[list[str], float]]:
    model = preact_resnet18_rf(10)
    names = {id(p): n for n, p in model.named_parameters()}
    settings = TrainSettings(epochs=1, lr=0.05, decay_all=run == "finetune")
    groups = loop._parameter_groups(model, settings)
    return [(sorted(names[id(p)] for p in g["params"]), g["weight_decay"]) for g in groups]


@pytest.mark.parametrize("run", ["scratch", "finetune"])
def test_weight_decay_groups(run):
    """From scratch: decay on all but BatchNorm and bias parameters (the reference picks them by name,
    ours by dimension: the same sets on this network); fine-tuning: one group, all decayed."""
    ref = [(sorted(g["names"]), g["weight_decay"]) for g in GOLDEN["runs"][run]["groups"]]
    assert _group_names(run) == ref


def test_multi_norm_sampling_probabilities(monkeypatch):
    record = GOLDEN["runs"]["scratch"]
    assert len(record["draws"]) == len(record["apgd"]) == 24
    policy = AdversarialInputs(NORMS, [8 / 255, 0.5, 12.0], steps=2)
    seen_weights = []

    def capture(weights, n, generator=None):
        seen_weights.append(weights.clone())
        return torch.zeros(1, dtype=torch.long)

    monkeypatch.setattr(torch, "multinomial", capture)
    robust, seen = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    for draw, attack in zip(record["draws"], record["apgd"], strict=True):
        policy.robust, policy.seen = robust.clone(), seen.clone()
        assert policy._draw_norm() == 0
        ref = torch.tensor(draw["weights"], dtype=torch.float64)
        torch.testing.assert_close(seen_weights[-1] / seen_weights[-1].sum(), ref / ref.sum(), rtol=0, atol=1e-7)
        which = NORMS.index(attack["norm"])
        assert which == draw["picked"]
        robust[which] += attack["robust"]
        seen[which] += attack["n"]
    assert len({tuple(d["weights"]) for d in record["draws"]}) > 1  # the weights did change along the run
