"""The papers' further evaluation sets: Tiny-ImageNet(-C), ImageNet-ReaL and the cue-conflict stimuli —
their readers and layout errors, and the scorings that are not argmax == label, against hand computations."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from robustsoup.attacks import attack_plan
from robustsoup.data import DataLayoutError, ImageSplit, load_split, open_dataset, prepare_shift_splits, prepare_splits
from robustsoup.data.check import check_dataset
from robustsoup.data.imagenet import read_wnids
from robustsoup.data.scoring import Scoring, read_categories, scoring_for
from robustsoup.evaluate.adversarial import evaluate_adversarial
from robustsoup.evaluate.clean import batch_correct, evaluate_clean
from robustsoup.soups.search import ensemble_correct

from data_fixtures import (
    imagenet_sample,
    write_cue_conflict,
    write_imagenet_c_folders,
    write_imagenet_real,
    write_tiny_imagenet,
    write_wnid_folders,
)


class FixedLogits(nn.Module):
    """A "model" that answers ``logits`` row by row, whatever the images (batches arrive in order)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits, self.position = logits, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.logits[self.position : self.position + len(x)]
        self.position += len(x)
        return out


def one_hot_logits(predictions: list[int], classes: int = 1000) -> torch.Tensor:
    logits = torch.zeros(len(predictions), classes)
    logits[torch.arange(len(predictions)), torch.as_tensor(predictions)] = 10.0
    return logits


# --- Tiny-ImageNet and Tiny-ImageNet-C ----------------------------------------------------------


def test_tiny_imagenet_reads_its_published_layout_with_sorted_wnid_labels(tmp_path):
    every = read_wnids("tiny-imagenet")
    assert len(every) == 200 and list(every) == sorted(every)
    wnids = [every[0], every[100], every[-1]]
    write_tiny_imagenet(tmp_path / "raw" / "tiny-imagenet-200", wnids)
    catalog = open_dataset("tiny-imagenet", tmp_path / "raw")  # the archive's own top folder works
    train, val = catalog["train"], catalog["val"]
    assert len(train) == 9 and len(val) == 6
    assert sorted(train.labels.unique().tolist()) == [0, 100, 199]
    assert val.labels.tolist() == [0, 0, 100, 100, 199, 199]  # from val_annotations.txt, not from folders
    images = val.load([0, 2, 4])
    assert images.shape == (3, 3, 64, 64)
    assert [int(v) // 10 for v in images[:, 0, 32, 32]] == [0, 1, 2]  # the fixture's code for wnids[i]
    paths = prepare_splits("tiny-imagenet", tmp_path / "out", root=tmp_path / "raw", k_adapt_per_class=1)
    assert {s: len(load_split(p)) for s, p in paths.items()} == {"train": 9, "adapt": 3, "test": 3}
    report = check_dataset("tiny-imagenet", tmp_path / "raw", quick=True)
    assert [p.name for p in report.parts] == ["train", "val"]


def test_tiny_imagenet_val_sorted_into_wnid_folders_as_the_rws_code_reads_it(tmp_path):
    every = read_wnids("tiny-imagenet")
    root = write_tiny_imagenet(tmp_path, [every[3], every[7]])
    (root / "val" / "val_annotations.txt").unlink()
    for image in (root / "val" / "images").iterdir():
        image.unlink()
    (root / "val" / "images").rmdir()
    write_wnid_folders(root / "val", [every[7]], per_class=2, size=(64, 64))
    val = open_dataset("tiny-imagenet", root)["val"]
    assert val.labels.tolist() == [7, 7] and val.load([1]).shape == (1, 3, 64, 64)


def test_tiny_imagenet_layout_errors_name_the_file(tmp_path):
    root = write_tiny_imagenet(tmp_path, [read_wnids("tiny-imagenet")[0]])
    (root / "wnids.txt").write_text("n01440764\n")
    with pytest.raises(DataLayoutError, match=r"lists 1 wnids; expected Tiny-ImageNet's 200") as error:
        open_dataset("tiny-imagenet", root)
    assert "Expected layout" in str(error.value) and "val_annotations.txt" in str(error.value)
    root = write_tiny_imagenet(tmp_path / "b", [read_wnids("tiny-imagenet")[0]])
    (root / "val" / "images" / "val_1.JPEG").unlink()
    with pytest.raises(DataLayoutError, match=r"1 of the 2 images .*val_annotations.txt names are not in"):
        check_dataset("tiny-imagenet", root, quick=True)
    (root / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn99999999\t0\t0\t1\t1\n")
    with pytest.raises(DataLayoutError, match=r"line 1 is 'val_0.JPEG\\tn99999999"):
        check_dataset("tiny-imagenet", root)
    root = write_tiny_imagenet(tmp_path / "c", [read_wnids("tiny-imagenet")[0]])
    for image in (root / "train").rglob("*.JPEG"):
        image.unlink()
    with pytest.raises(DataLayoutError, match=r"tiny-imagenet train: no images in .*/images"):
        check_dataset("tiny-imagenet", root, quick=True)
    with pytest.raises(DataLayoutError, match=r"wnids.txt is missing"):
        open_dataset("tiny-imagenet", tmp_path / "c" / "train")


def test_tiny_imagenet_c_shares_tiny_imagenets_labels(tmp_path):
    every = read_wnids("tiny-imagenet")
    write_imagenet_c_folders(tmp_path, [every[5], every[150]], ["fog", "snow"], res=64)
    report = check_dataset("tiny-imagenet-c", tmp_path, quick=True, corruptions=["fog"], severities=[2])
    assert report.corruptions == ["fog"] and [p.name for p in report.parts] == ["fog/2"]
    part = open_dataset("tiny-imagenet-c", tmp_path)["snow/3"]
    assert sorted(part.labels.unique().tolist()) == [5, 150] and part.load([0]).shape == (1, 3, 64, 64)
    with pytest.raises(DataLayoutError, match="corruption.s. frost not found"):
        check_dataset("tiny-imagenet-c", tmp_path, corruptions=["frost"])
    # The RWS code's layout: train/ (corrupted training images for the experts) beside val/ (the test set).
    write_imagenet_c_folders(tmp_path / "rws" / "train", [every[1]], ["fog"], res=64)
    write_imagenet_c_folders(tmp_path / "rws" / "val", [every[2]], ["fog"], res=64)
    catalog = open_dataset("tiny-imagenet-c", tmp_path / "rws")
    assert catalog.root == tmp_path / "rws" / "val" and catalog["fog/1"].labels.tolist() == [2, 2]
    write_imagenet_c_folders(tmp_path / "wrong", imagenet_sample(1), ["fog"], severities=[1], res=64)
    with pytest.raises(DataLayoutError, match="not classes of this data set"):
        check_dataset("tiny-imagenet-c", tmp_path / "wrong")


# --- ImageNet-ReaL --------------------------------------------------------------------------------

# Image i (file ILSVRC2012_val_<i+1>) lies in folder wnids[i % 2]; entry 1 is empty (left out).
REAL_SETS = [[0, 1], [], [7], [3, 4, 5], [9], [2]]


def test_real_leaves_out_empty_sets_and_scores_membership_by_hand(tmp_path):
    wnids = imagenet_sample(2)  # classes 0 and 500
    write_imagenet_real(tmp_path, REAL_SETS, wnids)
    part = open_dataset("imagenet-real", tmp_path)["all"]
    # Folder order: wnids[0] holds val_1, val_3, val_5; wnids[1] val_2 (empty set: left out), val_4, val_6.
    assert [p.name[-9:-5] for p in part.paths] == ["0001", "0003", "0005", "0004", "0006"]
    assert part.labels.tolist() == [0, 0, 0, 500, 500]
    assert part.targets.tolist() == [[0, 1, -1], [7, -1, -1], [9, -1, -1], [3, 4, 5], [2, -1, -1]]
    split = ImageSplit(part.load(range(5)), part.labels, "imagenet-real", "test", targets=part.targets)
    predictions = [1, 7, 0, 5, 3]  # in {0,1}: yes; in {7}: yes; in {9}: no; in {3,4,5}: yes; in {2}: no
    rows, points = evaluate_clean(FixedLogits(one_hot_logits(predictions)), "m", split)
    assert rows["n"].item() == 5 and rows["correct"].item() == 3 and rows["accuracy"].item() == pytest.approx(0.6)
    assert points["correct"].tolist() == [1, 1, 0, 1, 0]
    # Plain argmax == label would give 1 of 5 (only prediction 0 for label 0): the scoring matters.
    assert batch_correct(FixedLogits(one_hot_logits(predictions)), split.images, split.labels).sum() == 1


def test_real_targets_survive_both_split_caches(tmp_path):
    wnids = imagenet_sample(2)
    write_imagenet_real(tmp_path / "real", REAL_SETS * 2, wnids)  # 12 images, entries 1 and 7 empty
    decoded = prepare_shift_splits("imagenet-real", tmp_path / "real", tmp_path / "a", k_adapt_per_class=1)["all"]
    listed = prepare_shift_splits(
        "imagenet-real", tmp_path / "real", tmp_path / "b", k_adapt_per_class=1, cache_max_images=0
    )["all"]
    assert decoded["test"].suffix == ".safetensors" and listed["test"].suffix == ".tsv"
    sets = json.loads((tmp_path / "real" / "real.json").read_text())

    def unpadded(split) -> list[list[int]]:
        return [[t for t in row if t >= 0] for row in split.targets.tolist()]

    for split in ("adapt", "test"):
        a, b = load_split(decoded[split]), load_split(listed[split])
        assert torch.equal(a.labels, b.labels) and unpadded(a) == unpadded(b)
        for path, row in zip(b.paths, unpadded(b)):  # each row is its file's entry of real.json
            assert row == sets[int(path.name[15:23]) - 1]
    assert len(load_split(decoded["adapt"])) + len(load_split(decoded["test"])) == 10


def test_real_layout_errors(tmp_path):
    wnids = imagenet_sample(2)
    write_imagenet_real(tmp_path, REAL_SETS, wnids)
    report = check_dataset("imagenet-real", tmp_path, quick=True)
    assert "6 label sets, 1 empty (left out)" in report.parts[0].note
    (tmp_path / "real.json").write_text(json.dumps([[0], [1000]]))
    with pytest.raises(DataLayoutError, match=r"entry 1 \(image ILSVRC2012_val_00000002\) is \[1000\]"):
        check_dataset("imagenet-real", tmp_path, quick=True)
    (tmp_path / "real.json").write_text(json.dumps([[0], [1]]))  # too short for val_3 … val_6
    with pytest.raises(DataLayoutError, match=r"ILSVRC2012_val_00000003.JPEG is not one of the 2 validation"):
        open_dataset("imagenet-real", tmp_path)["all"]
    (tmp_path / "real.json").unlink()
    with pytest.raises(DataLayoutError, match=r"real.json is missing") as error:
        open_dataset("imagenet-real", tmp_path)
    assert "ILSVRC2012_val_<8 digits>.JPEG" in str(error.value)


def test_label_set_scoring_needs_targets():
    with pytest.raises(ValueError, match="needs each image's set of right classes"):
        scoring_for("imagenet-real").correct(one_hot_logits([1]), torch.tensor([1]))
    with pytest.raises(ValueError, match="empty target set"):
        scoring_for("imagenet-real").correct(one_hot_logits([1]), torch.tensor([1]), torch.tensor([[-1, -1]]))


# --- cue-conflict ---------------------------------------------------------------------------------


def test_cue_conflict_categories_are_model_vs_humans_sixteen():
    table = dict(read_categories("cue-conflict"))
    assert list(table) == sorted(table) and len(table) == 16
    assert table["airplane"] == (404,) and table["bear"] == (294, 295, 296, 297) and len(table["dog"]) == 109
    everything = [i for indices in table.values() for i in indices]
    assert len(everything) == len(set(everything)) == 207 and all(0 <= i < 1000 for i in everything)


def test_cue_conflict_mapping_matches_a_hand_computation():
    """The category score is the mean probability of its classes, so a category of many classes can
    lose to one with a lower top class: here the top class (8) is a bird, but bear wins."""
    table = dict(read_categories("cue-conflict"))
    p = np.full(1000, 0.0)
    p[8] = 0.3  # one bird class; the other 48 bird classes share 0.048
    p[[i for i in table["bird"] if i != 8]] = 0.001
    p[[294, 295, 296, 297]] = 0.1  # bear, mean 0.1
    rest = [i for i in range(1000) if p[i] == 0]
    p[rest] = (1 - p.sum()) / len(rest)
    logits = torch.tensor(np.log(p), dtype=torch.float64).unsqueeze(0)
    scoring = scoring_for("cue-conflict")
    scores = scoring.category_scores(logits)[0]
    names = list(table)
    assert scores[names.index("bear")].item() == pytest.approx(0.1)
    assert scores[names.index("bird")].item() == pytest.approx((0.3 + 48 * 0.001) / 49)
    assert scores[names.index("knife")].item() == pytest.approx(p[499])
    assert logits.argmax().item() == 8 and scoring.predict(logits).tolist() == [names.index("bear")]
    assert scoring.correct(logits, torch.tensor([names.index("bear")])).tolist() == [True]


def test_cue_conflict_is_scored_on_the_shape_category(tmp_path):
    names = [c for c, _ in read_categories("cue-conflict")]
    write_cue_conflict(tmp_path / "stimuli", per_category=2, categories=["bear", "cat", "truck"])
    part = open_dataset("cue-conflict", tmp_path)["all"]
    # Labels are the folders (the shape), in the sorted order of the 16 categories.
    assert part.labels.tolist() == [names.index(c) for c in ("bear", "bear", "cat", "cat", "truck", "truck")]
    assert part.load([0]).shape == (1, 3, 224, 224)
    # ImageNet predictions: bear, cat class, elephant (the texture, wrong), cat, truck, knife.
    predictions = [294, 281, 385, 285, 555, 499]
    split = ImageSplit(part.load(range(6)), part.labels, "cue-conflict", "test")
    rows, points = evaluate_clean(FixedLogits(one_hot_logits(predictions)), "m", split)
    assert points["correct"].tolist() == [1, 0, 0, 1, 1, 0] and rows["accuracy"].item() == pytest.approx(0.5)
    # An ensemble of two different models: the scoring reads log of the mean of their probabilities. On image 2
    # (a bear) the first is sure of a cat (p ≈ 1), the second less sure of a bear (p ≈ 0.75): the mean
    # probabilities give cat 0.5 / 6 classes < bear 0.37 / 4 classes, so the bear (the mean logits say cat).
    first, second = one_hot_logits(predictions), one_hot_logits([294, 294, 385, 285, 555, 499])
    first[1] *= 3
    second[1] *= 0.8
    cue = scoring_for("cue-conflict")
    by_hand = cue.correct(((first.softmax(1) + second.softmax(1)) / 2).log(), split.labels)
    together = ensemble_correct([FixedLogits(first), FixedLogits(second)], split.images, split.labels, scoring=cue)
    assert torch.equal(together, by_hand) and together.tolist() == [True, True, False, True, True, False]
    assert not cue.correct((first + second) / 2, split.labels)[1]
    write_cue_conflict(tmp_path / "bad", per_category=1, categories=["bear"])
    (tmp_path / "bad" / "zebra").mkdir()
    with pytest.raises(DataLayoutError, match="not classes of this data set"):
        open_dataset("cue-conflict", tmp_path / "bad")["all"]


def test_scorings_of_the_registry_and_their_refusals():
    assert scoring_for("imagenet") == Scoring() and scoring_for("imagenet-r") == Scoring("subset", "imagenet-r")
    # ImageNet-R: the logits of its 200 classes only; class 1 (goldfish) is its label 0.
    logits = one_hot_logits([1]) + one_hot_logits([0]) * 0.5
    assert scoring_for("imagenet-r").predict(logits).tolist() == [0]
    with pytest.raises(ValueError, match="reads the 1,000 ImageNet logits"):
        scoring_for("cue-conflict").predict(torch.zeros(1, 10))
    with pytest.raises(ValueError, match="scoring must be one of"):
        Scoring("top5")
    split = ImageSplit(
        torch.zeros(2, 3, 8, 8, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), "cue-conflict", "t"
    )
    plan = attack_plan("fast", "Linf", 16, 1, 1)
    with pytest.raises(ValueError, match="robust accuracy on cue-conflict is not defined here"):
        evaluate_adversarial(FixedLogits(torch.zeros(2, 1000)), "m", split, "Linf", 0.01, plan, 2)
