"""data.train_per_class: a stratified, seeded subset of the training images, on every kind of data set,
recorded in the split's header and in the checkpoint's sidecar."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors import safe_open

from robustsoup.config import ConfigError
from robustsoup.data import (
    FileSplit,
    ImageSplit,
    get_dataset_spec,
    load_split,
    prepare_splits,
    split_paths,
    stratified_split,
)
from robustsoup.data.check import check_run_data, train_subset_problem
from robustsoup.data.split_indices import TrainSubsetError, train_subset
from robustsoup.data.splits import split_record
from robustsoup.data.stages import prepare_data
from robustsoup.run_config import resolve_config

from conftest import tiny_meta
from data_fixtures import imagenet_sample, write_cifar_binaries, write_cifar_image_folder, write_wnid_folders

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _uneven_labels() -> torch.Tensor:
    """Four classes of 7, 9, 12 and 5 images, mixed in a fixed order."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([7, 9, 12, 5])])
    return labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(0))]


def _ids(split) -> set[int]:
    """The fixtures' image numbers (channel 1 of pixel (0, 0))."""
    return set(split.images[:, 1, 0, 0].tolist())


# --- the index subset -------------------------------------------------------------


def test_subset_is_k_per_class_of_the_candidates_and_seeded():
    labels = _uneven_labels()
    candidates = torch.arange(len(labels))[2:]  # the first two images are not training images
    subset = train_subset(labels, candidates, 3, seed=1)
    assert labels[subset].bincount().tolist() == [3, 3, 3, 3]
    assert len(set(subset.tolist())) == 12 and set(subset.tolist()) <= set(candidates.tolist())
    # Interleaved by class: the first four hold one image of each class.
    assert sorted(labels[subset[:4]].tolist()) == [0, 1, 2, 3]
    # The same seed gives the same indices, whatever order the candidates come in.
    assert torch.equal(train_subset(labels, candidates, 3, seed=1), subset)
    assert torch.equal(train_subset(labels, candidates.flip(0), 3, seed=1), subset)
    assert set(train_subset(labels, candidates, 3, seed=2).tolist()) != set(subset.tolist())
    # A smaller subset lies inside a larger one's under the same seed.
    assert set(train_subset(labels, candidates, 2, seed=1).tolist()) < set(subset.tolist())
    with pytest.raises(ValueError, match="at least 1"):
        train_subset(labels, candidates, 0, seed=1)


def test_a_class_with_too_few_candidates_is_named_with_its_count():
    labels = _uneven_labels()
    with pytest.raises(TrainSubsetError) as error:
        train_subset(labels, torch.arange(len(labels)), 8, seed=0, class_names=lambda cs: {c: f"c{c}" for c in cs})
    message = str(error.value)
    assert "data.train_per_class = 8" in message and "2 of 4 classes have fewer" in message
    assert "class 0 (c0): 7; class 3 (c3): 5" in message
    assert "lower data.train_per_class to at most 5" in message and "null" in message
    # A class that must be there but has no candidates at all.
    with pytest.raises(TrainSubsetError, match=r"class 4: 0\).*check that every class has training images"):
        train_subset(labels, torch.arange(len(labels)), 2, seed=0, classes=[0, 1, 2, 3, 4])


# --- every kind of data set ---------------------------------------------------------


def test_cifar_binaries_subset_comes_from_the_training_images_only(tmp_path):
    write_cifar_binaries(tmp_path / "raw", per_batch=12, test_size=30)  # train: classes 0, 1 ×10, others ×5
    full = prepare_splits("cifar10", tmp_path / "full", root=tmp_path / "raw", k_adapt_per_class=1, seed=3)
    paths = prepare_splits(
        "cifar10", tmp_path / "sub", root=tmp_path / "raw", k_adapt_per_class=1, seed=3, train_per_class=4
    )
    splits = {name: load_split(path) for name, path in paths.items()}
    whole = {name: load_split(path) for name, path in full.items()}
    train = splits["train"]
    assert len(train) == 40 and train.labels.bincount().tolist() == [4] * 10
    assert torch.equal(train.images[:, 0, 5, 5].long(), train.labels * 10)  # each image with its own label
    # Images 0…59 are the training part, 60… the test part: the subset is of the training split alone …
    assert _ids(train) <= _ids(whole["train"]) == set(range(60)) and len(_ids(train)) == 40
    assert not _ids(train) & (_ids(splits["adapt"]) | _ids(splits["test"]))
    # … and adapt / test are exactly what they are without the key.
    for split in ("adapt", "test"):
        assert torch.equal(splits[split].images, whole[split].images)
    again = prepare_splits(
        "cifar10", tmp_path / "again", root=tmp_path / "raw", k_adapt_per_class=1, seed=3, train_per_class=4
    )
    assert torch.equal(load_split(again["train"]).images, train.images)
    other = prepare_splits(
        "cifar10", tmp_path / "other", root=tmp_path / "raw", k_adapt_per_class=1, seed=4, train_per_class=4
    )
    assert _ids(load_split(other["train"])) != _ids(train)


def test_cifar_image_folder_subset_is_stratified(tmp_path):
    write_cifar_image_folder(tmp_path / "raw", CIFAR10_CLASSES, {"train": 5, "test": 2})
    paths = prepare_splits("cifar10", tmp_path / "out", root=tmp_path / "raw", k_adapt_per_class=1, train_per_class=3)
    train = load_split(paths["train"])
    assert isinstance(train, ImageSplit) and train.labels.bincount().tolist() == [3] * 10
    assert torch.equal(train.images[:, 0, 0, 0].long(), train.labels * 10)
    # Channel 1 is the image's number within its class folder: three different ones per class.
    pairs = set(zip(train.labels.tolist(), train.images[:, 1, 0, 0].tolist()))
    assert len(pairs) == 30 and {i for _, i in pairs} <= set(range(5))
    assert split_record(train)["train_per_class"] == 3


def test_imagenet_subset_stays_a_file_list_or_is_decoded_as_its_size_says(tmp_path):
    wnids = imagenet_sample()
    write_wnid_folders(tmp_path / "raw" / "train", wnids, per_class=4)
    write_wnid_folders(tmp_path / "raw" / "val", wnids, per_class=2)
    common = {"root": tmp_path / "raw", "k_adapt_per_class": 1, "train_per_class": 2}
    # 2 × 1,000 classes = 2,000 published images: a file list above cache_max_images …
    paths = prepare_splits("imagenet", tmp_path / "list", cache_max_images=1000, **common)
    assert paths == split_paths(
        "imagenet", tmp_path / "list", k_adapt_per_class=1, cache_max_images=1000, train_per_class=2
    )
    assert paths["train"].suffix == ".tsv"
    train = load_split(paths["train"])
    assert isinstance(train, FileSplit) and len(train) == 6
    assert train.labels.bincount(minlength=1000)[[0, 500, 999]].tolist() == [2, 2, 2]
    assert all(p.parent.parent.name == "train" for p in train.paths)  # never a val (adapt / test) image
    assert "# train_per_class=2" in paths["train"].read_text().splitlines()
    assert split_record(train) == {
        "dataset": "imagenet",
        "split": "train",
        "images": 6,
        "split_seed": 0,
        "train_per_class": 2,
    }
    # … and decoded at or below it (the whole training set would be a file list).
    decoded = prepare_splits("imagenet", tmp_path / "decoded", cache_max_images=2000, **common)
    assert decoded["train"].suffix == ".safetensors"
    assert torch.equal(load_split(decoded["train"]).images, train.load(torch.arange(6)))


def test_digits_subset_is_taken_from_what_adapt_and_test_leave(digits_splits, tmp_path):
    config = resolve_config({"dataset": "digits", "data": {"n_adapt": 100, "n_test": 200, "train_per_class": 3}})
    paths = prepare_data(config, split_paths("digits", tmp_path, train_per_class=3))
    train = load_split(paths["train"])
    assert train.labels.bincount().tolist() == [3] * 10
    whole_train = {bytes(image.numpy()) for image in digits_splits["train"].images}
    assert all(bytes(image.numpy()) in whole_train for image in train.images)
    for split in ("adapt", "test"):  # the same adapt / test as without the key (the session's split)
        assert torch.equal(load_split(paths[split]).images, digits_splits[split].images)
    labels = get_dataset_spec("digits").reader()[1]
    candidates = stratified_split(labels, n_adapt=100, n_test=200, seed=0)["train"]
    assert torch.equal(train.labels, labels[train_subset(labels, candidates, 3, seed=0)])


# --- too few images ------------------------------------------------------------------


def test_too_few_training_images_stop_prepare_with_the_classes_and_counts(tmp_path):
    write_cifar_binaries(tmp_path / "bin", per_batch=12, test_size=30)
    with pytest.raises(TrainSubsetError) as error:
        prepare_splits("cifar10", tmp_path / "out", root=tmp_path / "bin", k_adapt_per_class=1, train_per_class=6)
    message = str(error.value)
    assert "8 of 10 classes have fewer" in message and "class 2: 5" in message and "class 9: 5" in message
    assert "lower data.train_per_class to at most 5" in message and "data.train_per_class: null" in message
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing written
    # An ImageFolder names the class folders; a class with test images but none for training says so.
    write_cifar_image_folder(tmp_path / "folder", CIFAR10_CLASSES, {"train": 3, "test": 2})
    for name in ("0000.png", "0001.PNG"):
        (tmp_path / "folder" / "train" / "cat" / name).unlink()
    with pytest.raises(TrainSubsetError, match=r"1 of 10 classes have fewer \(class 3 \(cat\): 1\)"):
        prepare_splits("cifar10", tmp_path / "out", root=tmp_path / "folder", k_adapt_per_class=1, train_per_class=2)
    shutil.rmtree(tmp_path / "folder" / "train" / "dog")
    with pytest.raises(TrainSubsetError, match=r"class 5 \(dog\): 0.*check that every class has training images"):
        prepare_splits("cifar10", tmp_path / "out", root=tmp_path / "folder", k_adapt_per_class=1, train_per_class=1)
    with pytest.raises(TrainSubsetError, match="left after data.n_adapt and data.n_test"):
        prepare_splits("digits", tmp_path / "digits", n_adapt=100, n_test=200, train_per_class=160)


def test_a_subset_no_published_training_set_can_hold_fails_while_the_workflow_parses():
    cifar = resolve_config({"dataset": "cifar10", "data": {"train_per_class": 5001}})
    assert "need 50,010 images" in train_subset_problem(cifar) and "50,000" in train_subset_problem(cifar)
    assert train_subset_problem(resolve_config({"dataset": "cifar10", "data": {"train_per_class": 5000}})) is None
    assert train_subset_problem(resolve_config({"dataset": "cifar10"})) is None
    # digits: 1,797 images less 200 adapt and 450 test leave 1,147, not 1,150.
    with pytest.raises(ConfigError, match=r"data\.train_per_class.*1,147 left of 1,797"):
        check_run_data(resolve_config({"dataset": "digits", "data": {"train_per_class": 115}}))
    check_run_data(resolve_config({"dataset": "digits", "data": {"train_per_class": 114}}))


# --- where it is recorded ------------------------------------------------------------


def test_the_split_header_and_the_sidecar_record_the_subset(tmp_path):
    from robustsoup.checkpoint import load_meta
    from robustsoup.train.loop import TrainSettings
    from robustsoup.train.policies import CleanInputs
    from robustsoup.train.run import train_and_checkpoint

    write_cifar_binaries(tmp_path / "raw", per_batch=12, test_size=30)
    out = tmp_path / "data"
    paths = prepare_splits("cifar10", out, root=tmp_path / "raw", k_adapt_per_class=1, train_per_class=2)
    with safe_open(str(paths["train"]), framework="pt") as handle:
        assert handle.metadata()["train_per_class"] == "2" and handle.metadata()["n"] == "20"
    with safe_open(str(paths["adapt"]), framework="pt") as handle:
        assert "train_per_class" not in handle.metadata()  # only the train split holds a subset
    # Preparing again without the key replaces the cache, and its header says so.
    prepare_splits("cifar10", out, root=tmp_path / "raw", k_adapt_per_class=1)
    whole = load_split(paths["train"])
    assert (
        len(whole) == 60 and whole.metadata["train_per_class"] == "" and split_record(whole)["train_per_class"] is None
    )
    # A split built in memory records what it knows, nothing guessed.
    assert split_record(ImageSplit(whole.images[:3], whole.labels[:3], "cifar10", "train")) == {
        "dataset": "cifar10",
        "split": "train",
        "images": 3,
    }
    subset = prepare_splits("digits", tmp_path / "digits", n_adapt=100, n_test=200, train_per_class=2)
    meta = tiny_meta()
    settings = TrainSettings(epochs=1, lr=0.1, batch_size=10, augmentation="none")
    written = train_and_checkpoint(
        meta.build(), meta, load_split(subset["train"]), CleanInputs(), settings, tmp_path / "m.safetensors", "cpu"
    )
    assert load_meta(written).training["train_split"] == {
        "dataset": "digits",
        "split": "train",
        "images": 20,
        "split_seed": 0,
        "train_per_class": 2,
    }
