"""Soups per configured shift (data.shifts, issue 17 item 4): every shift data set is one adaptation set for
selection and held-out rows for evaluation, scored as its data set says; a -C set is tested per corruption ×
severity, so the soups table shows its mean accuracy and mCE."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from robustsoup.checkpoint import CheckpointMeta, load_model, save_checkpoint
from robustsoup.data import ImageSplit, load_split, prepare_shift_splits, prepare_splits, restrict_logits
from robustsoup.data.scoring import Scoring, scoring_for
from robustsoup.evaluate.mce import ALEXNET_ERRORS
from robustsoup.evaluate.shifts import part_label
from robustsoup.run_config import resolve_config
from robustsoup.soups.report import shifts_table
from robustsoup.soups.search import SoupScorer, grid_search, label_space
from robustsoup.soups.stages import evaluate_soups_shifts, interleaved_head, select_soups

from conftest import FAMILY_PARENT
from data_fixtures import imagenet_sample, subset_sample, write_imagenet_c_folders, write_wnid_folders

BASE = ["linf", "linf-l2", "linf-l1", "linf-nominal"]


def imagenet_meta(name: str = "tiny") -> CheckpointMeta:
    """A tiny network with ImageNet's 1,000 outputs (what subset scoring reads), of the digits run's identity,
    one of a soup family (fine-tuned from one parent, as the soups require)."""
    return CheckpointMeta(
        name=name,
        architecture="preact_resnet_small",
        model_kwargs={"width": 4, "activation": "relu"},
        dataset="digits",
        num_classes=1000,
        mean=[0.45, 0.45, 0.45],
        std=[0.25, 0.25, 0.25],
        parent="parent",
        lineage=[dict(FAMILY_PARENT)],
    )


@pytest.fixture(scope="module")
def imagenet_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for i, name in enumerate(BASE):
        torch.manual_seed(i)
        state = imagenet_meta(name).build().state_dict()
        paths[name] = str(save_checkpoint(folder / f"{name}.safetensors", state, imagenet_meta(name)))
    return paths


@pytest.fixture(scope="module")
def shift_splits(tmp_path_factory):
    """ImageNet-R (2 of its 200 classes, file lists) and ImageNet-C (one class, every corruption × severity)."""
    root = tmp_path_factory.mktemp("shifts")
    write_wnid_folders(root / "imagenet-r", subset_sample("imagenet-r", 3), per_class=3)
    write_imagenet_c_folders(root / "imagenet-c", imagenet_sample(1), list(ALEXNET_ERRORS), per_class=2, res=24)
    out = root / "splits"
    written = {
        shift: prepare_shift_splits(shift, root / shift, out / shift, seed=0, k_adapt_per_class=1, cache_max_images=0)
        for shift in ("imagenet-r", "imagenet-c")
    }
    return {
        split: {shift: {part: str(paths[split]) for part, paths in parts.items()} for shift, parts in written.items()}
        for split in ("adapt", "test")
    }


def _config() -> dict:
    return resolve_config(
        {
            "model": {"width": 4},
            "soups": {
                "search": {"step": 0.5, "k": [4], "methods": ["grid", "entropy"], "precision": "float32"},
                "ensembles": [["linf", "linf-l2"]],
            },
        }
    )


def test_part_labels_name_corruption_and_severity():
    assert part_label("all") == ("none", 0)
    assert part_label("fog/3") == ("fog", 3)
    with pytest.raises(ValueError, match="expected 'all' or '<corruption>/<severity>'"):
        part_label("fog")


def test_a_multi_part_shift_adapts_on_its_parts_in_turn():
    def part(offset: int, n: int) -> ImageSplit:
        images = torch.arange(offset, offset + n, dtype=torch.uint8).view(n, 1, 1, 1).expand(n, 3, 2, 2).clone()
        return ImageSplit(images, torch.arange(offset, offset + n), "cifar10-c", "adapt")

    head = interleaved_head([part(0, 3), part(10, 1), part(20, 2)], 5, "cifar10-c")
    assert head.labels.tolist() == [0, 10, 20, 1, 21]  # image 0 of every part, then image 1 of those with one
    assert head.images[:, 0, 0, 0].tolist() == [0, 10, 20, 1, 21]  # images travel with their labels
    assert interleaved_head([part(0, 3), part(10, 1)], 99, "x").labels.tolist() == [0, 10, 1, 2]
    with pytest.raises(ValueError, match="no parts"):
        interleaved_head([], 4, "x")


def test_selection_scores_a_subset_shift_among_its_200_classes(imagenet_models):
    """Grid search on ImageNet-R counts a soup right when its best of the 200 classes is the label, not
    its best of all 1,000: the scores are exactly the restricted argmax's."""
    models = [load_model(imagenet_models[n])[0] for n in BASE[:2]]
    scorer = SoupScorer(imagenet_meta().build(), [m.state_dict() for m in models], BASE[:2])
    torch.manual_seed(0)
    inputs = scorer.prepare(torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8))
    scoring = scoring_for("imagenet-r")
    scorer.load({BASE[0]: 1.0})
    logits = scorer.logits(inputs)
    labels = restrict_logits(logits, "imagenet-r").argmax(-1)  # what the subset scoring predicts: all right
    assert scorer.accuracy({BASE[0]: 1.0}, inputs, labels, scoring) == 1.0
    assert scorer.accuracy({BASE[0]: 1.0}, inputs, labels) < 1.0  # argmax over 1,000 classes: not these labels
    chosen = grid_search(scorer, [{BASE[0]: 1.0, BASE[1]: 0.0}, {BASE[0]: 0.0, BASE[1]: 1.0}], inputs, labels, scoring)
    assert chosen.details["scores"][0] == 1.0
    assert label_space(logits, scoring).shape == (24, 200)
    assert label_space(logits, Scoring()).shape == (24, 1000)


def test_every_configured_shift_is_selected_on_and_evaluated_per_part(imagenet_models, shift_splits, tmp_path):
    config = _config()
    splits = prepare_splits("digits", tmp_path, n_adapt=20, n_test=20, seed=0)
    selection = select_soups(
        config,
        imagenet_models,
        splits["adapt"],
        None,
        tmp_path / "scores.tsv",
        tmp_path / "selection.tsv",
        shifts=shift_splits["adapt"],
    )
    # One adaptation set per shift: ImageNet-R's 3 adapt images (fewer than k = 4), ImageNet-C's 75 parts as one.
    grid = selection[selection["method"] == "grid"].set_index("evalset")
    assert grid["images"].to_dict() == {"clean": 4, "imagenet-r": 3, "imagenet-c": 4}
    assert set(grid["k"]) == {4}  # rows keep the k asked for, so the table has one row per method and k
    assert set(pd.read_csv(tmp_path / "scores.tsv", sep="\t").columns) >= {"clean", "imagenet-r", "imagenet-c"}

    metrics = evaluate_soups_shifts(
        config,
        imagenet_models,
        splits["test"],
        None,
        tmp_path / "selection.tsv",
        tmp_path / "shifts.tsv",
        tmp_path / "models.tsv",
        shifts=shift_splits["test"],
    )
    base = metrics[metrics["model"] == "linf"]
    assert list(dict.fromkeys(base["evalset"])) == ["clean", "imagenet-r", "imagenet-c"]
    r = base[base["evalset"] == "imagenet-r"].iloc[0]
    assert (r["corruption"], r["severity"], r["n"]) == ("none", 0, 6)
    c = base[base["evalset"] == "imagenet-c"]
    assert len(c) == 75 and set(c["corruption"]) == set(ALEXNET_ERRORS) and set(c["severity"]) == {1, 2, 3, 4, 5}
    assert set(c["n"]) == {1}
    # The per-shift soups are tested on their own shift only; the ensemble on every shift.
    assert set(metrics[metrics["model"] == "soup-imagenet-r-grid-k4"]["evalset"]) == {"imagenet-r"}
    assert len(metrics[metrics["model"] == "soup-imagenet-c-grid-k4"]) == 75
    assert len(metrics[metrics["model"] == "ensemble-linf+linf-l2"]) == 1 + 1 + 75

    # By hand: linf on ImageNet-R's test split, its logits restricted to the 200 classes.
    test = load_split(shift_splits["test"]["imagenet-r"]["all"])
    model = load_model(imagenet_models["linf"])[0]
    with torch.no_grad():
        predicted = restrict_logits(model(test.load(torch.arange(len(test))).float() / 255), "imagenet-r").argmax(-1)
    assert r["correct"] == int((predicted == test.labels).sum())

    models = pd.read_csv(tmp_path / "models.tsv", sep="\t")
    table = shifts_table(metrics, models, selection, ["clean", "imagenet-r", "imagenet-c"], "imagenet")
    assert {"imagenet-r", "imagenet-c", "imagenet-c mCE", "imagenet-c relative mCE"} <= set(table.columns)
    assert table.loc["linf", "imagenet-c"] == pytest.approx(round(c["accuracy"].mean() * 100, 1))
    assert not pd.isna(table.loc["linf", "imagenet-c mCE"])
    soups = table.loc["per-shift soups (grid, k=4)"]
    assert not soups[["clean", "imagenet-r", "imagenet-c", "imagenet-c mCE"]].isna().any()
    assert json.loads(models.set_index("model").loc["linf", "weights"]) == {"linf": 1.0}


def test_a_shift_named_like_a_base_shift_is_refused(imagenet_models, shift_splits, tmp_path):
    splits = prepare_splits("digits", tmp_path, n_adapt=20, n_test=20, seed=0)
    with pytest.raises(ValueError, match="already shift names of the base set"):
        select_soups(
            _config(),
            imagenet_models,
            splits["adapt"],
            None,
            tmp_path / "scores.tsv",
            tmp_path / "selection.tsv",
            shifts={"clean": shift_splits["adapt"]["imagenet-r"]},
        )
