"""data.test_per_class: a stratified, seeded subset of the test images left after adapt, on data sets with an
official test part and on shifts; adapt and train unchanged; digits refuses it, pointing to data.n_test."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open

from robustsoup.config import ConfigError
from robustsoup.data import adapt_test_split, load_split, prepare_shift_splits, prepare_splits, split_paths
from robustsoup.data.split_indices import TestSubsetError
from robustsoup.data.splits import split_record
from robustsoup.data.stages import prepare_data, prepare_shift
from robustsoup.paths import RunPaths
from robustsoup.run_config import resolve_config

from data_fixtures import write_cifar_binaries, write_cifar_image_folder, write_hendrycks_npy

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _uneven_labels() -> torch.Tensor:
    """Four classes of 7, 9, 12 and 5 images, mixed in a fixed order."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([7, 9, 12, 5])])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def _ids(split) -> set[int]:
    """The CIFAR fixtures' image numbers (channel 1 of pixel (0, 0))."""
    return set(split.images[:, 1, 0, 0].tolist())


# --- the index split -----------------------------------------------------------------


def test_test_subset_is_m_per_class_after_the_unchanged_adapt_images():
    labels = _uneven_labels()
    whole = adapt_test_split(labels, 2, seed=1)
    split = adapt_test_split(labels, 2, seed=1, test_per_class=3)
    assert torch.equal(split["adapt"], whole["adapt"])  # adapt does not depend on the key
    test = split["test"]
    assert labels[test].bincount().tolist() == [3, 3, 3, 3] and len(set(test.tolist())) == 12
    assert set(test.tolist()) <= set(whole["test"].tolist())  # a subset of the full test split …
    assert not set(test.tolist()) & set(split["adapt"].tolist())  # … so disjoint from adapt
    # Each class takes the first 3 of its full-split test images: the full split interleaves by class, so a
    # class's images appear in it in the seeded order.
    for c in range(4):
        assert test[labels[test] == c].tolist() == whole["test"][labels[whole["test"]] == c][:3].tolist()
    # Interleaved by class: every run of four holds one image of each class.
    assert all(sorted(labels[test[i : i + 4]].tolist()) == [0, 1, 2, 3] for i in range(0, 12, 4))
    # Deterministic, nested for growing m, and seeded.
    assert torch.equal(adapt_test_split(labels, 2, seed=1, test_per_class=3)["test"], test)
    assert set(adapt_test_split(labels, 2, seed=1, test_per_class=2)["test"].tolist()) < set(test.tolist())
    assert set(adapt_test_split(labels, 2, seed=2, test_per_class=3)["test"].tolist()) != set(test.tolist())
    # The smallest class (5 images, 2 to adapt) has exactly 3 left: the largest m that works.
    assert len(adapt_test_split(labels, 2, seed=1, test_per_class=3)["test"]) == 12
    with pytest.raises(ValueError, match="at least 1"):
        adapt_test_split(labels, 2, seed=1, test_per_class=0)


def test_a_class_with_too_few_test_images_is_named_with_its_count():
    labels = _uneven_labels()
    with pytest.raises(TestSubsetError) as error:
        adapt_test_split(
            labels, 2, seed=0, test_per_class=6, class_names=lambda cs: {c: f"c{c}" for c in cs}, where="toy"
        )
    message = str(error.value)
    assert "data.test_per_class = 6" in message and "every class of toy" in message
    assert "2 of 4 classes have fewer left after the 2 adaptation images" in message
    assert "class 0 (c0): 5; class 3 (c3): 3" in message  # 7 − 2 and 5 − 2
    assert "lower data.test_per_class to at most 3" in message and "data.test_per_class: null" in message


# --- data sets with an official test part ---------------------------------------------


def test_cifar_test_subset_keeps_adapt_and_train_and_is_recorded(tmp_path):
    write_cifar_binaries(tmp_path / "raw", per_batch=12, test_size=60)  # test: 6 per class, ids 60 … 119
    common = {"root": tmp_path / "raw", "k_adapt_per_class": 2, "seed": 3}
    whole = {s: load_split(p) for s, p in prepare_splits("cifar10", tmp_path / "full", **common).items()}
    paths = prepare_splits("cifar10", tmp_path / "sub", test_per_class=3, **common)
    splits = {s: load_split(p) for s, p in paths.items()}
    test = splits["test"]
    assert len(test) == 30 and test.labels.bincount().tolist() == [3] * 10
    assert torch.equal(test.images[:, 0, 5, 5].long(), test.labels * 10)  # each image with its own label
    for split in ("train", "adapt"):  # unchanged by the key
        assert torch.equal(splits[split].images, whole[split].images)
    assert _ids(test) < _ids(whole["test"]) and not _ids(test) & (_ids(splits["adapt"]) | _ids(splits["train"]))
    assert sorted(test.labels[:10].tolist()) == list(range(10))  # interleaved by class
    # Deterministic and nested.
    again = prepare_splits("cifar10", tmp_path / "again", test_per_class=3, **common)
    assert torch.equal(load_split(again["test"]).images, test.images)
    smaller = load_split(prepare_splits("cifar10", tmp_path / "small", test_per_class=1, **common)["test"])
    assert smaller.labels.bincount().tolist() == [1] * 10 and _ids(smaller) < _ids(test)
    # Recorded in the test split's header only.
    assert test.metadata["test_per_class"] == "3" and test.metadata["n"] == "30"
    assert split_record(test)["test_per_class"] == 3
    assert whole["test"].metadata["test_per_class"] == "" and split_record(whole["test"])["test_per_class"] is None
    for split in ("train", "adapt"):
        with safe_open(str(paths[split]), framework="pt") as handle:
            assert "test_per_class" not in handle.metadata()


def test_prepare_data_passes_the_key(tmp_path):
    write_cifar_image_folder(tmp_path / "raw", CIFAR10_CLASSES, {"train": 2, "test": 4})
    config = resolve_config(
        {"dataset": "cifar10", "data": {"root": str(tmp_path / "raw"), "k_adapt_per_class": 1, "test_per_class": 2}}
    )
    paths = prepare_data(config, split_paths("cifar10", tmp_path / "out", k_adapt_per_class=1, test_per_class=2))
    test = load_split(paths["test"])
    assert test.labels.bincount().tolist() == [2] * 10 and test.metadata["test_per_class"] == "2"
    assert len(load_split(paths["adapt"])) == 10 and len(load_split(paths["train"])) == 20


def test_too_few_test_images_stop_prepare_with_the_classes_and_counts(tmp_path):
    write_cifar_binaries(tmp_path / "bin", per_batch=12, test_size=30)  # 3 test images per class
    with pytest.raises(TestSubsetError) as error:
        prepare_splits("cifar10", tmp_path / "out", root=tmp_path / "bin", k_adapt_per_class=1, test_per_class=3)
    message = str(error.value)
    assert "cifar10's 'test' part" in message and "10 of 10 classes have fewer" in message
    assert "class 0: 2" in message and "lower data.test_per_class to at most 2" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written
    # An ImageFolder names the class folder.
    write_cifar_image_folder(tmp_path / "folder", CIFAR10_CLASSES, {"train": 1, "test": 3})
    (tmp_path / "folder" / "test" / "cat" / "0002.bmp").unlink()
    with pytest.raises(TestSubsetError, match=r"1 of 10 classes have fewer .*\(class 3 \(cat\): 1\)"):
        prepare_splits("cifar10", tmp_path / "out", root=tmp_path / "folder", k_adapt_per_class=1, test_per_class=2)


def test_a_subset_the_published_test_set_cannot_hold_fails_while_the_workflow_parses():
    def paths(dataset: str, **data) -> RunPaths:
        return RunPaths(resolve_config({"dataset": dataset, "data": {"root": "/data", **data}}))

    assert paths("cifar10", test_per_class=990).data["test"].endswith("test.safetensors")
    with pytest.raises(ConfigError, match=r"need 9,910 images, but its test split holds 9,900.*at most 990"):
        paths("cifar10", test_per_class=991)
    with pytest.raises(ConfigError, match="k_adapt_per_class = 20 per class"):
        paths("cifar10", test_per_class=990, k_adapt_per_class=20)
    # A shift is held to the same key: ImageNet-V2 has 10 images per class, one of them for adapt.
    shifts = {"k_adapt_per_class": 1, "shifts": {"imagenet-v2": "/v2"}}
    assert paths("imagenet", test_per_class=9, **shifts).shifts["imagenet-v2"]["all"]["test"].endswith(".safetensors")
    with pytest.raises(ConfigError, match="imagenet-v2's 1000 classes need 10,000 images"):
        paths("imagenet", test_per_class=10, **shifts)


# --- digits ------------------------------------------------------------------------------


def test_digits_refuses_the_key_and_points_to_n_test(tmp_path):
    with pytest.raises(ConfigError, match=r"digits has no official test part.*Set data\.n_test instead \(e\.g\. 50"):
        prepare_splits("digits", tmp_path, test_per_class=5)
    assert not any(tmp_path.iterdir())
    config = resolve_config({"dataset": "digits", "data": {"test_per_class": 5}})
    with pytest.raises(ConfigError, match="data.n_test"):
        prepare_data(config, {split: tmp_path / f"{split}.safetensors" for split in ("train", "adapt", "test")})
    with pytest.raises(ConfigError, match="config key 'data.test_per_class'.*data.n_test"):  # while it parses
        RunPaths(resolve_config({"dataset": "digits", "data": {"test_per_class": 5}}))
    # Without the key the digits test split is n_test images, recorded as every image of it.
    test = load_split(prepare_splits("digits", tmp_path / "whole", n_adapt=100, n_test=200)["test"])
    assert len(test) == 200 and test.metadata["test_per_class"] == ""


# --- shifts ------------------------------------------------------------------------------


def test_every_shift_part_keeps_m_per_class_and_the_same_adapt(tmp_path):
    root = tmp_path / "c"
    write_hendrycks_npy(root / "CIFAR-10-C", ["fog", "snow"], n=16)  # 4 classes × 4 images per part
    whole = prepare_shift_splits("cifar10-c", root, tmp_path / "full", parts=["fog/3"], k_adapt_per_class=1)
    config = resolve_config(
        {
            "dataset": "cifar10",
            "data": {
                "root": str(tmp_path),
                "k_adapt_per_class": 1,
                "test_per_class": 2,
                "shifts": {"cifar10-c": str(root)},
                "corruptions": ["fog", "snow"],
                "severities": [3, 5],
            },
            "rws": {"enabled": False},  # its corruptions are not these two
        }
    )
    written = prepare_shift(config, "cifar10-c", tmp_path / "sub")
    assert sorted(written) == ["fog/3", "fog/5", "snow/3", "snow/5"]
    for part, paths in written.items():
        test = load_split(paths["test"])
        assert test.labels.bincount().tolist() == [2, 2, 2, 2] and test.metadata["test_per_class"] == "2"
        assert test.metadata["part"] == part
    fog = {s: load_split(p) for s, p in written["fog/3"].items()}
    full = {s: load_split(p) for s, p in whole["fog/3"].items()}
    assert torch.equal(fog["adapt"].images, full["adapt"].images)
    assert _ids(fog["test"]) < _ids(full["test"]) and not _ids(fog["test"]) & _ids(fog["adapt"])
    with pytest.raises(TestSubsetError, match=r"cifar10-c part 'fog/3'.*at most 3"):
        prepare_shift_splits("cifar10-c", root, tmp_path / "x", parts=["fog/3"], k_adapt_per_class=1, test_per_class=4)
    # The workflow reruns prepare_shift when the key changes, and names the same files.
    paths = RunPaths(resolve_config(config))
    assert '"test_per_class": 2' in paths.rerun("prepare_shift", "cifar10-c")
    assert paths.shifts["cifar10-c"]["fog/3"]["test"] == str(
        split_paths(
            "cifar10-c", f"{paths.shift_dir('cifar10-c')}/fog/3", part="fog/3", k_adapt_per_class=1, test_per_class=2
        )["test"]
    )
