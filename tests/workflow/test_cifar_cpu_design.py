"""The CIFAR-10 CPU presets carry the F3 / F5 design that docs/reproducing.md registers (issue 23, part 4):
1,000 labelled adaptation images per shift and a teacher trained on shifted images only, with sizes the
real CIFAR-10 can hold. Resolution facts only (seconds); tests/workflow/test_cifar_cpu_preset.py runs the
one-hour preset's structure through the workflow."""

from __future__ import annotations

import pytest
import torch

from robustsoup.distill.augmentation import make_augmentation
from robustsoup.distill.config import check_distill_config, leaked_corruptions, teacher_shift
from robustsoup.evaluate.adversarial import evaluation_shard
from robustsoup.run_config import load_config_file, resolve_config

from conftest import REPO

PRESETS = {name: REPO / "config" / "presets" / f"{name}.yaml" for name in ("cifar10-cpu", "cifar10-cpu-long")}
CIFAR10 = {"train": 5000, "test": 1000}  # images per class of the real data set


def resolved(name: str) -> dict:
    return load_config_file(PRESETS[name])


@pytest.mark.parametrize("name", PRESETS)
def test_soups_are_chosen_on_1000_labelled_images_per_shift_disjoint_from_the_test_images(name):
    config = resolved(name)
    data, search = config["data"], config["soups"]["search"]
    adapt_per_shift = 10 * data["k_adapt_per_class"]  # every shift is the adapt split, shifted
    assert adapt_per_shift == max(search["k"]) == 1000
    assert "grid" in search["methods"] and search["step"] == 0.25
    # adapt and test are disjoint draws from the test set's 1,000 images per class, training from the train set
    assert data["k_adapt_per_class"] + data["test_per_class"] <= CIFAR10["test"]
    assert data["train_per_class"] <= CIFAR10["train"]
    assert config["pretrain"]["batch_size"] == 64
    assert all(target["batch_size"] == 64 for target in config["finetune"].values())


@pytest.mark.parametrize("name", PRESETS)
def test_evaluation_sizes_and_shards_fit_the_test_split(name):
    config = resolved(name)
    test_images = 10 * config["data"]["test_per_class"]
    evaluate = config["evaluate"]
    assert evaluate["n_images"] <= test_images and config["distill"]["evaluate"]["n_images"] <= test_images
    shards = [
        evaluation_shard(evaluate["n_images"], test_images, evaluate["batch_size"], evaluate["shards"], s)
        for s in range(evaluate["shards"])
    ]
    assert all(shard.stop > shard.start for shard in shards), "an evaluation shard would be empty"
    assert shards[-1].stop == evaluate["n_images"]


@pytest.mark.parametrize("name", PRESETS)
def test_the_teacher_trains_on_shifted_images_only_and_never_on_an_evaluated_corruption(name):
    config = resolved(name)
    check_distill_config(config)
    d = config["distill"]
    shift = teacher_shift(config)
    assert shift["kind"] == "augmix+corruptions" and shift["clean_fraction"] == 0.0
    # the robust head's distillation and the fine-tuning baseline keep the half-clean batches
    assert d["augmentation"]["clean_fraction"] == 0.5
    assert leaked_corruptions(config) == [] and d["selection"]["calibration"] == "held-out"
    assert not set(shift["corruptions"]) & set(config["data"]["corruptions"])
    assert d["teacher"]["width"] < d["student"]["width"]
    assert d["teacher"]["training"]["epochs"] >= 2 * d["student"]["training"]["epochs"]
    policy = make_augmentation(shift, config["seed"])
    policy(None, torch.rand(32, 3, 32, 32), None)
    assert bool(policy.last_shifted.all()), "clean_fraction 0: every teacher image is shifted"


def test_teacher_clean_fraction_null_takes_the_augmentations():
    config = resolved("cifar10-cpu")
    config["distill"]["teacher"]["clean_fraction"] = None
    assert teacher_shift(config) == config["distill"]["augmentation"]


def test_the_long_preset_is_the_one_hour_design_with_more_training_and_more_points():
    short, long = resolved("cifar10-cpu"), resolved("cifar10-cpu-long")

    def flat(tree, prefix=""):
        out = {}
        for key, value in tree.items():
            if isinstance(value, dict):
                out.update(flat(value, f"{prefix}{key}."))
            else:
                out[f"{prefix}{key}"] = value
        return out

    a, b = flat(short), flat(long)
    differing = {key for key in a.keys() | b.keys() if a.get(key) != b.get(key)}
    assert differing == {
        "data.train_per_class",
        "pretrain.epochs",
        "evaluate.n_images",
        "soups.search.methods",
        "soups.search.learned_steps",
        "distill.teacher.training.epochs",
        "distill.student.training.epochs",
        "distill.evaluate.n_images",
    }
    assert b["data.train_per_class"] == 2 * a["data.train_per_class"] == 1000
    assert "learned" in b["soups.search.methods"] and "learned" not in a["soups.search.methods"]


def test_train_teacher_records_the_teachers_own_clean_fraction(tmp_path):
    """The rule's stage trains the teacher on teacher_shift (its sidecar says so), not on distill.augmentation."""
    from safetensors.torch import save_file

    from robustsoup.checkpoint import load_model
    from robustsoup.data import prepare_splits
    from robustsoup.distill.stages import train_teacher

    from conftest import tiny_meta

    save_file(tiny_meta(width=4).build().state_dict(), tmp_path / "teacher.safetensors")
    teacher = {"width": 4, "weights": str(tmp_path / "teacher.safetensors"), "training": {"epochs": 0}}
    config = resolve_config({"distill": {"teacher": {**teacher, "clean_fraction": 0.0}}})
    train = prepare_splits("digits", tmp_path / "data", n_adapt=20, n_test=40, seed=0)["train"]
    train_teacher(config, train, tmp_path / "out.safetensors", torch.device("cpu"))
    _, meta = load_model(tmp_path / "out.safetensors")
    assert meta.training["shift"]["clean_fraction"] == 0.0 != config["distill"]["augmentation"]["clean_fraction"]
    assert "clean" not in meta.training["policy"]
