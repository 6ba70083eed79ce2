"""Sharded evaluation (evaluate.shards): shards of whole attack batches merge into exactly one job's files."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from robustsoup.attacks import attack_batch_size
from robustsoup.checkpoint import save_checkpoint
from robustsoup.data import load_split, prepare_splits
from robustsoup.evaluate.adversarial import evaluation_shard, merge_shards
from robustsoup.evaluate.rows import METRIC_COLUMNS, metric_row
from robustsoup.lp.stages import evaluate_model, evaluate_model_shard, merge_model_shards
from robustsoup.points import read_points
from robustsoup.run_config import resolve_config
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import CleanInputs
from robustsoup.train.run import model_identity, new_meta

THREATS = ["Linf", "L2", "L1"]


def _config(shards: int, batch_size: int = 4) -> dict:
    return resolve_config(
        {
            "device": "cpu",
            "model": {"architecture": "preact_resnet_small", "width": 4, "activation": "relu"},
            # 22 of the 40 test images attacked in batches of 4: 6 batches, the last one of 2 images.
            "evaluate": {"n_images": 22, "threats": THREATS, "n_iter": 2, "batch_size": batch_size, "shards": shards},
            "threats": {"Linf": 0.01, "L2": 0.15, "L1": 1.5},
        }
    )


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A width-4 model trained briefly on digits, and a test split of 40 images labelled with its own
    predictions: every point is attacked, and the points lie near its boundaries, where random starts matter."""
    folder = tmp_path_factory.mktemp("shards")
    paths = prepare_splits("digits", folder / "data", n_adapt=20, n_test=40, seed=0)
    meta = new_meta(model_identity(_config(1)), "m")
    torch.manual_seed(0)
    model = meta.build()
    settings = TrainSettings(epochs=1, lr=0.1, batch_size=32, schedule="cosine")
    train_model(model, load_split(paths["train"]), CleanInputs(), settings, torch.device("cpu"))
    save_checkpoint(folder / "m.safetensors", model.state_dict(), meta)
    test = load_split(paths["test"])
    with torch.no_grad():
        own = model.eval()(test.images.float() / 255).argmax(1)
    assert len(own.unique()) > 3, "the briefly trained model should predict several classes"
    save_file({"images": test.images, "labels": own}, str(folder / "test.safetensors"))
    return folder / "m.safetensors", folder / "test.safetensors"


def _outputs(folder) -> dict[str, tuple]:
    folder.mkdir(parents=True, exist_ok=True)
    return {t: (folder / f"{t}.tsv", folder / f"{t}.points.tsv") for t in ["clean", *THREATS]}


@pytest.mark.parametrize("shards", [3, 7])
def test_shards_merge_to_exactly_the_files_of_one_job(tmp_path, checkpoint, shards):
    weights, test = checkpoint
    whole = _outputs(tmp_path / "whole")
    evaluate_model(_config(1), weights, test, whole, torch.device("cpu"))

    config = _config(shards)
    parts = [_outputs(tmp_path / f"shard{s}") for s in range(shards)]
    for s, outputs in enumerate(parts):
        evaluate_model_shard(config, s, weights, test, outputs, torch.device("cpu"))
    merged = _outputs(tmp_path / "merged")
    joined = {t: ([p[t][0] for p in parts], [p[t][1] for p in parts]) for t in merged}
    merge_model_shards(config, joined, merged)

    for threat, files in whole.items():
        for one, other in zip(files, merged[threat]):
            assert one.read_bytes() == other.read_bytes(), f"{threat}: {one.name} differs"
    assert len(read_points(whole["clean"][1])) == 40 and len(read_points(whole["L1"][1])) == 22
    if shards == 7:  # 6 batches: one shard attacks nothing and writes empty files
        assert any(len(read_points(p["L2"][1])) == 0 for p in parts)


def test_the_batch_layout_matters_here(tmp_path, checkpoint):
    """The power of the test above: batches of 3 instead of 4 (the layout of shards cut off the batch
    boundaries) give other L1 results on this model, because the random starts fall on other points."""
    weights, test = checkpoint
    four, three = _outputs(tmp_path / "four"), _outputs(tmp_path / "three")
    evaluate_model(_config(1), weights, test, four, torch.device("cpu"))
    evaluate_model(_config(1, batch_size=3), weights, test, three, torch.device("cpu"))
    robust = read_points(four["L1"][1])["correct"]
    assert 0 < robust.sum() < len(robust)
    assert not robust.equals(read_points(three["L1"][1])["correct"])


def test_shards_are_runs_of_whole_batches_covering_every_point_once():
    shards = [evaluation_shard(22, 40, 4, 3, s) for s in range(3)]
    assert [(s.start, s.stop, s.clean_stop) for s in shards] == [(0, 8, 8), (8, 16, 16), (16, 22, 40)]
    assert all(s.start % 4 == 0 for s in shards)
    whole = evaluation_shard(22, 40, 4)
    assert (whole.start, whole.stop, whole.clean_stop) == (0, 22, 40)
    many = [evaluation_shard(5, 5, 4, 3, s) for s in range(3)]
    assert [(s.start, s.stop) for s in many] == [(0, 0), (0, 4), (4, 5)]
    with pytest.raises(ValueError, match="expected 0 ≤ shard < 3"):
        evaluation_shard(22, 40, 4, 3, 3)


def _shard(start: int, correct: list[int], threat: str = "Linf", eps: float = 0.1):
    points = pd.DataFrame({"index": range(start, start + len(correct)), "label": 1, "correct": correct})
    row = metric_row("m", "test", torch.tensor(correct).bool(), threat=threat, eps=eps, attack="a")
    return pd.DataFrame([row], columns=METRIC_COLUMNS), points


def test_merging_counts_the_row_again_from_the_points():
    (r0, p0), (r1, p1) = _shard(0, [1, 0]), _shard(2, [1, 1, 1])
    row, points = merge_shards([r0, r1], [p0, p1])
    assert list(points["index"]) == [0, 1, 2, 3, 4]
    assert (row["n"].item(), row["correct"].item(), row["accuracy"].item()) == (5, 4, 0.8)
    assert (row["threat"].item(), row["eps"].item(), row["attack"].item()) == ("Linf", 0.1, "a")


@pytest.mark.parametrize("second_start", [3, 1], ids=["gap", "overlap"])
def test_merging_refuses_shards_with_a_gap_or_an_overlap(second_start):
    (r0, p0), (r1, p1) = _shard(0, [1, 0]), _shard(second_start, [1, 1])
    with pytest.raises(ValueError, match="same evaluate.batch_size on the same kind of device"):
        merge_shards([r0, r1], [p0, p1])


def test_merging_refuses_rows_of_other_evaluations():
    (r0, p0), (r1, p1) = _shard(0, [1, 0]), _shard(2, [1], eps=0.2)
    with pytest.raises(ValueError, match=r"differing in \['eps'\]"):
        merge_shards([r0, r1], [p0, p1])


def test_merging_needs_every_shard_of_the_config(tmp_path):
    config = _config(3)
    outputs = _outputs(tmp_path)
    shards = {t: ([tmp_path / "a.tsv"] * 2, [tmp_path / "a.points.tsv"] * 2) for t in outputs}
    with pytest.raises(ValueError, match="evaluate.shards is 3; got 2 row and 2 per-point files"):
        merge_model_shards(config, shards, outputs)


def test_auto_batch_is_larger_on_cuda_for_small_images_and_unchanged_on_the_cpu():
    assert attack_batch_size("auto", "cpu", 32) == 250
    assert attack_batch_size("auto", torch.device("cuda", 1), 32) == 1000
    assert attack_batch_size("auto", "cuda", 224) == 250
    assert attack_batch_size(64, "cuda", 32) == 64
    with pytest.raises(ValueError, match="positive integer or 'auto'"):
        attack_batch_size(0, "cpu", 32)


def test_the_log_counts_clean_and_attacked_batches_with_an_eta(tmp_path, checkpoint, caplog, monkeypatch):
    import logging

    from robustsoup import progress

    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO)
    weights, test = checkpoint
    evaluate_model(_config(1), weights, test, _outputs(tmp_path), torch.device("cpu"))
    lines = [r.getMessage() for r in caplog.records if r.name == "robustsoup.progress"]
    # 40 clean points in one batch; 22 attacked points in batches of 4: 6 batches per norm, 18 in all
    assert [re.sub(r" \(\d+%\).*", "", line) for line in lines] == [
        "m clean: 1/1 batches",
        *(f"m attacks (Linf, L2, L1): {i}/18 batches" for i in range(1, 19)),
    ]
    assert all(" elapsed, ETA " in line and "\r" not in line for line in lines)
    assert lines[-1].endswith("ETA 0s")
