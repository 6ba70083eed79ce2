"""Data-parallel training (robustsoup.train.distributed) on CPU with gloo: 2 ranks give 1 process's weights."""

from pathlib import Path

import pytest
import torch
from torch import nn

from robustsoup.data import ImageSplit
from robustsoup.train import distributed
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import CleanInputs

N, BATCH = 36, 13  # batches of 13, 13, 10: shards of 7/6, 7/6, 5/5 (the loss weighting matters)


class _Interrupted(Exception):
    pass


def _data() -> ImageSplit:
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(N, 3, 8, 8, generator=generator) * 255).to(torch.uint8)
    return ImageSplit(images, torch.randint(0, 10, (N,), generator=generator), "synthetic", "train")


def _model(batchnorm: bool) -> nn.Module:
    torch.manual_seed(0)
    norm = [nn.BatchNorm2d(6)] if batchnorm else []
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), *norm, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10)
    )


def _train(batchnorm: bool, dist, resume_path=None, stop_after: int | None = None) -> tuple[dict, list[dict]]:
    model = _model(batchnorm)
    settings = TrainSettings(epochs=2, lr=0.2, batch_size=BATCH, seed=3, sync_batchnorm=batchnorm)

    def on_epoch_end(epoch: int) -> None:
        if epoch == stop_after:
            raise _Interrupted

    history = train_model(
        model,
        _data(),
        CleanInputs(),
        settings,
        torch.device("cpu"),
        resume_path=resume_path,
        fingerprint="f",
        distributed=dist,
        on_epoch_end=on_epoch_end,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}, history


def _first_run(out: str) -> None:
    """Rank body: both models for 2 epochs, and a run killed after epoch 1 (its resume state kept)."""
    torch.set_num_threads(1)
    dist = distributed.current(sync_batchnorm=True)
    plain, plain_history = _train(False, dist)
    synced, _ = _train(True, dist)
    with pytest.raises(_Interrupted):
        _train(False, dist, resume_path=Path(out) / "run.resume.pt", stop_after=1)
    if dist.is_main:
        torch.save({"plain": plain, "history": plain_history, "synced": synced}, Path(out) / "first.pt")


def _resumed_run(out: str) -> None:
    torch.set_num_threads(1)
    dist = distributed.current()
    resumed, history = _train(False, dist, resume_path=Path(out) / "run.resume.pt")
    if dist.is_main:
        torch.save({"resumed": resumed, "history": history}, Path(out) / "resumed.pt")


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_shards_split_a_batch_contiguously_and_batches_too_small_are_refused():
    ranks = [distributed.Distributed(r, 3, r, "gloo") for r in range(3)]
    assert [r.shard(8) for r in ranks] == [slice(0, 3), slice(3, 6), slice(6, 8)]
    assert [r.shard(3) for r in ranks] == [slice(0, 1), slice(1, 2), slice(2, 3)]
    ranks[0].check_batches(30, 10)
    with pytest.raises(ValueError, match="batch of 2 images cannot be split over 3"):
        ranks[0].check_batches(32, 10)


def test_gpus_must_match_the_processes_launched(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert distributed.from_environment(1, torch.device("cpu")) is None
    with pytest.raises(RuntimeError, match="torchrun --standalone --nproc_per_node=2"):
        distributed.from_environment(2, torch.device("cpu"))
    with pytest.raises(ValueError, match="gpus must be a positive integer"):
        TrainSettings(epochs=1, lr=0.1, gpus=0)


def test_two_ranks_train_the_weights_of_one_process_and_resume_after_a_kill(tmp_path):
    """A kill, then a resume with the same number of ranks, with one process instead of two, and with two
    instead of one (every rank then starts from the saved process's RNG and policy state)."""
    torch.set_num_threads(1)
    plain, plain_history = _train(False, None)
    synced, _ = _train(True, None)
    distributed.spawn(_first_run, 2, str(tmp_path))
    first = torch.load(tmp_path / "first.pt", weights_only=False)
    # No BatchNorm: the same SGD steps up to float summation order.
    _close(first["plain"], plain, atol=1e-6)
    assert [r["loss"] for r in first["history"]] == pytest.approx([r["loss"] for r in plain_history], abs=1e-6)
    assert [r["train_accuracy"] for r in first["history"]] == [r["train_accuracy"] for r in plain_history]
    # BatchNorm with synchronised statistics: the global batch's (running statistics included).
    _close(first["synced"], synced, atol=1e-5)

    state = torch.load(tmp_path / "run.resume.pt", weights_only=False)
    assert state["epoch"] == 1 and len(state["ranks"]) == 2
    (tmp_path / "one" / "run.resume.pt").parent.mkdir()
    (tmp_path / "one" / "run.resume.pt").write_bytes((tmp_path / "run.resume.pt").read_bytes())
    distributed.spawn(_resumed_run, 2, str(tmp_path))
    resumed = torch.load(tmp_path / "resumed.pt", weights_only=False)
    _close(resumed["resumed"], first["plain"], atol=0)
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in first["history"]]
    # two ranks' state, resumed by one process: its epoch 2 is the uninterrupted run's
    alone, alone_history = _train(False, None, resume_path=tmp_path / "one" / "run.resume.pt")
    _close(alone, plain, atol=1e-6)
    assert [r["epoch"] for r in alone_history] == [1, 2]
    assert alone_history[0] == state["history"][0]  # epoch 1 restored as the two ranks recorded it (its seconds too)
    # one process's state, resumed by two ranks
    two = tmp_path / "two"
    with pytest.raises(_Interrupted):
        _train(False, None, resume_path=two / "run.resume.pt", stop_after=1)
    saved = torch.load(two / "run.resume.pt", weights_only=False)
    assert "ranks" not in saved
    distributed.spawn(_resumed_run, 2, str(two))
    grown = torch.load(two / "resumed.pt", weights_only=False)
    _close(grown["resumed"], plain, atol=1e-6)
    assert [r["epoch"] for r in grown["history"]] == [1, 2] and grown["history"][0] == saved["history"][0]
    assert grown["history"][1]["loss"] == pytest.approx(plain_history[1]["loss"], abs=1e-6)
