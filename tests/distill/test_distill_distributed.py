"""Robust distillation under data parallelism: 2 gloo ranks distil the weights of one process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from robustsoup.distill.method import (
    AugmentInputs,
    DistillSettings,
    distill_multihead,
    multihead_state_from_student,
    predict_logits,
)
from robustsoup.models import build_model
from robustsoup.train import distributed

from conftest import tiny_meta

N, BATCH = 16, 6  # batches of 6, 6, 4: shards of 3/3, 3/3, 2/2


@dataclass
class _FlipOddLabels:
    """A shift decided per image (a mirror image for odd labels), so a shard's draws are the global
    batch's: the policy of a test whose two ranks must match one process exactly."""

    name: str = "flip odd labels"

    def __call__(self, model, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.last_shifted = y % 2 == 1
        return torch.where(self.last_shifted.view(-1, 1, 1, 1), x.flip(3), x)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _distil() -> tuple[dict, list[dict]]:
    """Distil a fresh multi-head student (no dropout, frozen BatchNorm: nothing depends on the shard)."""
    torch.manual_seed(0)
    student = tiny_meta(width=4).build().eval()
    model = build_model(
        "multihead",
        10,
        [0.3] * 3,
        [0.3] * 3,
        base="preact_resnet_small",
        width=4,
        activation="relu",
        dropout=0.0,
        trainable_blocks=1,
    )
    model.load_state_dict(multihead_state_from_student(student.state_dict(), model.net))
    teacher = tiny_meta(width=4).build().eval()
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=generator)
    from robustsoup.data import ImageSplit

    data = ImageSplit(images, torch.arange(N) % 10, "digits", "train")
    settings = DistillSettings(epochs=2, lr=0.05, batch_size=BATCH, batchnorm="frozen")
    history = distill_multihead(
        model, teacher, predict_logits(student, data, "cpu"), data, _FlipOddLabels(), settings, torch.device("cpu")
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, history


def _rank(out: str) -> None:
    torch.set_num_threads(1)
    weights, history = _distil()
    if distributed.current().is_main:
        torch.save({"weights": weights, "history": history}, Path(out) / "two.pt")


def test_two_ranks_distil_the_weights_and_tallies_of_one_process(tmp_path):
    torch.set_num_threads(1)
    weights, history = _distil()
    distributed.spawn(_rank, 2, str(tmp_path))
    two = torch.load(tmp_path / "two.pt", weights_only=False)
    assert two["weights"].keys() == weights.keys()
    for key, tensor in weights.items():
        torch.testing.assert_close(two["weights"][key], tensor, atol=1e-6, rtol=0, msg=key)
    assert [r["loss"] for r in two["history"]] == pytest.approx([r["loss"] for r in history], abs=1e-6)
    # The per-epoch tallies are the global batch's (summed over ranks), not rank 0's shard's.
    for mine, one in zip(two["history"], history, strict=True):
        assert mine["shifted_fraction"] == one["shifted_fraction"] > 0
        assert mine["train_accuracy"] == one["train_accuracy"]


def test_each_rank_shifts_its_shard_with_a_stream_of_its_own():
    def policy():
        return AugmentInputs("augmix+corruptions", ["gaussian_blur"], [3], clean_fraction=0.5, seed=4)

    x, y = torch.rand(8, 3, 32, 32), torch.arange(8)
    alone = policy()
    expected = alone(None, x, y)
    ranks = [distributed.RankPolicy(policy(), distributed.Distributed(r, 2, r, "gloo")) for r in range(2)]
    outputs = [rank(None, x, y) for rank in ranks]
    torch.testing.assert_close(outputs[0], expected, rtol=0, atol=0)  # rank 0 draws the one-process stream
    assert torch.equal(ranks[0].last_shifted, alone.last_shifted)
    assert not torch.equal(outputs[1], outputs[0])
