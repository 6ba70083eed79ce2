"""Robust distillation under data parallelism: 2 gloo ranks distil the weights of one process, resume after a
kill, and the rule's package function (distill_student) with gpus: 2 launches them itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from robustsoup.checkpoint import load_checkpoint, save_checkpoint
from robustsoup.distill.augmentation import AugmentInputs
from robustsoup.distill.stages import distill_student
from robustsoup.distill.student import multihead_state_from_student
from robustsoup.distill.training import DistillSettings, distill_multihead, predict_logits
from robustsoup.models import create_model
from robustsoup.run_config import resolve_config
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
    model = create_model(
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


class _Killed(RuntimeError):
    pass


def _kill_after(epoch: int):
    def on_epoch_end(done: int) -> None:
        if done == epoch:
            raise _Killed(f"killed after epoch {epoch}")

    return on_epoch_end


def _distil_augmented(out: str, kill_after: int | None) -> None:
    """A rank of a 3-epoch distillation on AugMix and corruptions (per-rank streams) with dropout, resumable
    from ``out``/state.pt; rank 0 saves the weights to ``out``/weights.pt."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    student = tiny_meta(width=4).build().eval()
    model = create_model(
        "multihead", 10, [0.3] * 3, [0.3] * 3, base="preact_resnet_small", width=4, dropout=0.25, trainable_blocks=1
    )
    model.load_state_dict(multihead_state_from_student(student.state_dict(), model.net))
    from robustsoup.data import ImageSplit

    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=generator)
    data = ImageSplit(images, torch.arange(N) % 10, "digits", "train")
    policy = AugmentInputs("augmix+corruptions", ["gaussian_blur", "saturate"], [2, 4], clean_fraction=0.5, seed=2)
    settings = DistillSettings(epochs=3, lr=0.05, batch_size=BATCH)
    distill_multihead(
        model,
        tiny_meta(width=4).build().eval(),
        predict_logits(student, data, "cpu"),
        data,
        policy,
        settings,
        torch.device("cpu"),
        fingerprint="resume test",
        resume_path=Path(out) / "state.pt",
        on_epoch_end=None if kill_after is None else _kill_after(kill_after),
    )
    if distributed.current().is_main:
        torch.save(model.state_dict(), Path(out) / "weights.pt")


def test_two_ranks_killed_after_an_epoch_resume_to_the_uninterrupted_weights(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    straight.mkdir(), killed.mkdir()
    distributed.spawn(_distil_augmented, 2, str(straight), None)
    with pytest.raises(Exception, match="_Killed: killed after epoch 1"):
        distributed.spawn(_distil_augmented, 2, str(killed), 1)
    state = torch.load(killed / "state.pt", weights_only=False)
    assert state["epoch"] == 1 and len(state["ranks"]) == 2 and not (killed / "weights.pt").exists()
    distributed.spawn(_distil_augmented, 2, str(killed), None)  # the rerun resumes every rank's streams
    resumed, expected = torch.load(killed / "weights.pt"), torch.load(straight / "weights.pt")
    for key, tensor in expected.items():
        assert torch.equal(resumed[key], tensor), key


def _stage_config(gpus: int, batchnorm: str, sync_batchnorm: bool) -> dict:
    """A distillation whose shift is decided per image (saturate, a held-out corruption, at one severity, every image shifted) with
    no dropout: nothing but BatchNorm's statistics (frozen, or synchronised) could depend on the sharding."""
    shift = {"kind": "corruptions", "corruptions": ["saturate"], "severities": [3], "clean_fraction": 0.0}
    distillation = {"epochs": 2, "lr": 0.05, "batch_size": BATCH, "batchnorm": batchnorm, "precision": "float32"}
    distillation.update(gpus=gpus, sync_batchnorm=sync_batchnorm)
    models = {"teacher": {"width": 4}, "student": {"width": 4}, "multihead": {"dropout": 0.0, "trainable_blocks": 1}}
    return resolve_config({"distill": {**models, "augmentation": shift, "distillation": distillation}})


@pytest.mark.parametrize(("batchnorm", "sync_batchnorm", "atol"), [("frozen", False, 1e-6), ("train", True, 1e-5)])
def test_distill_student_with_gpus_2_launches_two_ranks_that_write_the_one_process_checkpoint(
    tmp_path, batchnorm, sync_batchnorm, atol
):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    paths = {}
    for name in ("teacher", "student"):
        meta = tiny_meta(name)
        paths[name] = save_checkpoint(tmp_path / f"{name}.safetensors", meta.build().state_dict(), meta)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=generator)
    train = tmp_path / "train.safetensors"
    save_file({"images": images, "labels": torch.arange(N) % 10}, str(train), {"dataset": "digits", "split": "train"})
    torch.set_num_threads(1)
    written = {}
    for gpus in (1, 2):
        out = tmp_path / f"gpus{gpus}.safetensors"
        args = (paths["teacher"], paths["student"], train, out, torch.device("cpu"))
        assert distill_student(_stage_config(gpus, batchnorm, sync_batchnorm), *args) == out
        written[gpus] = load_checkpoint(out)
        assert not out.with_suffix(".resume.pt").exists()
    (one, one_meta), (two, two_meta) = written[1], written[2]
    assert two.keys() == one.keys()
    for key, tensor in one.items():
        torch.testing.assert_close(two[key], tensor, atol=atol, rtol=0, msg=key)
    record = {"world_size": 2, "backend": "gloo", "sync_batchnorm": sync_batchnorm}
    assert two_meta.training["distributed"] == record and two_meta.training["gpus"] == 2
    assert "distributed" not in one_meta.training
    history_one, history_two = one_meta.metrics["train_history"], two_meta.metrics["train_history"]
    assert [r["loss"] for r in history_two] == pytest.approx([r["loss"] for r in history_one], abs=atol)
    assert [r["train_accuracy"] for r in history_two] == [r["train_accuracy"] for r in history_one]
