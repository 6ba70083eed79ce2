"""Readers of every on-disk format, on fixtures the tests write: through the registry, into splits."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from robustsoup.data import (
    DataLayoutError,
    FileSplit,
    ImageSplit,
    adapt_test_split,
    decode_image,
    get_dataset_spec,
    imagenet_wnids,
    load_split,
    open_dataset,
    prepare_shift_splits,
    prepare_splits,
    restrict_logits,
    split_paths,
    split_storage,
    subset_indices,
    wnid_to_index,
)
from robustsoup.data.imagenet import read_wnids
from robustsoup.data.readers import read_array_pickle

from data_fixtures import (
    coded_images,
    imagenet_sample,
    subset_sample,
    write_cifar_binaries,
    write_cifar_image_folder,
    write_hendrycks_npy,
    write_png,
    write_wnid_folders,
)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


# --- class lists ------------------------------------------------------------


def test_wnid_lists_are_complete_sorted_and_nested():
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) and list(wnids) == sorted(wnids)
    assert wnids[0] == "n01440764" and wnids[-1] == "n15075141"
    for name in ("imagenet-r", "imagenet-a"):
        subset = read_wnids(name)
        assert len(subset) == 200 == len(set(subset)) and list(subset) == sorted(subset)
        assert set(subset) <= set(wnids)
    assert read_wnids("imagenet-r") != read_wnids("imagenet-a")
    # Known entries: IN-R starts at goldfish (ImageNet class 1), IN-A at n01498041 (stingray, 6).
    assert subset_indices("imagenet-r")[:3].tolist() == [1, 2, 4]
    assert subset_indices("imagenet-a")[0].item() == 6


def test_restricted_logits_pick_the_subset_in_label_order():
    index = subset_indices("imagenet-r")
    logits = torch.zeros(200, 1000)
    logits[torch.arange(200), index] = 5.0  # row j votes for the ImageNet class of label j
    restricted = restrict_logits(logits, "imagenet-r")
    assert restricted.shape == (200, 200)
    assert torch.equal(restricted.argmax(1), torch.arange(200))
    with pytest.raises(ValueError, match="1,000 ImageNet logits"):
        restrict_logits(torch.zeros(2, 10), "imagenet-a")


# --- CIFAR ------------------------------------------------------------------


def test_cifar10_binaries_read_in_order_with_labels(tmp_path):
    write_cifar_binaries(tmp_path, per_batch=6)
    catalog = open_dataset("cifar10", tmp_path)
    assert list(catalog) == ["train", "test"] and "binaries" in catalog.description
    train, test = catalog["train"], catalog["test"]
    assert len(train) == 30 and len(test) == 6
    images = train.load(torch.arange(30))
    assert images.shape == (30, 3, 32, 32) and images.dtype == torch.uint8
    # channel 0 carries label·10, channel 1 the running index: CHW order and batch order are right.
    assert torch.equal(images[:, 0, 5, 5].long(), train.labels * 10)
    assert images[:, 1, 0, 0].tolist() == list(range(30))
    assert (images[:, 2] == 77).all()


def test_cifar100_binaries_use_fine_labels(tmp_path):
    write_cifar_binaries(tmp_path, per_batch=4, num_classes=100, cifar100=True)
    catalog = open_dataset("cifar100", tmp_path / "cifar-100-python")  # the folder itself works too
    assert len(catalog["train"]) == 20 and len(catalog["test"]) == 4
    assert catalog["train"].labels.tolist()[:5] == [0, 1, 2, 3, 4]


def test_restricted_unpickler_refuses_code(tmp_path):
    bad = tmp_path / "data_batch_1"

    class Exploit:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned",))

    bad.write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    with pytest.raises(DataLayoutError, match="refusing to load"):
        read_array_pickle(bad)


def test_cifar_image_folder_reads_lossless_pixels_and_any_extension(tmp_path):
    write_cifar_image_folder(tmp_path, CIFAR10_CLASSES, {"train": 3, "test": 4})
    catalog = open_dataset("cifar10", tmp_path)
    assert "ImageFolder" in catalog.description
    test = catalog["test"]
    assert len(test) == 40 and test.labels.bincount().tolist() == [4] * 10
    images = test.load(torch.arange(40))
    assert torch.equal(images[:, 0, 0, 0].long(), test.labels * 10)  # class folder → label (official order)
    assert sorted({p.suffix for p in test.paths}) == [".PNG", ".bmp", ".png"]


def test_cifar10_official_split_adapt_is_k_per_class_and_disjoint_from_test(tmp_path):
    write_cifar_binaries(tmp_path / "raw", per_batch=20, test_size=60)
    out = tmp_path / "data"
    paths = prepare_splits("cifar10", out, root=tmp_path / "raw", k_adapt_per_class=3, seed=5)
    assert {p.name for p in paths.values()} == {"train.safetensors", "adapt.safetensors", "test.safetensors"}
    splits = {name: load_split(path) for name, path in paths.items()}
    assert len(splits["train"]) == 100  # all of the official training images
    assert splits["adapt"].labels.bincount().tolist() == [3] * 10
    assert len(splits["adapt"]) + len(splits["test"]) == 60
    # Channel 1 holds a running image number: adapt and test come from the test part, disjoint.
    adapt_ids = set(splits["adapt"].images[:, 1, 0, 0].tolist())
    test_ids = set(splits["test"].images[:, 1, 0, 0].tolist())
    assert not adapt_ids & test_ids and len(adapt_ids | test_ids) == 60
    again = prepare_splits("cifar10", tmp_path / "again", root=tmp_path / "raw", k_adapt_per_class=3, seed=5)
    assert torch.equal(load_split(again["adapt"]).images, splits["adapt"].images)
    # Interleaved by class: the first 10 adaptation images are one per class.
    assert sorted(splits["adapt"].labels[:10].tolist()) == list(range(10))


def test_adapt_test_split_keeps_one_test_image_for_small_classes():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 6)
    parts = adapt_test_split(labels, k=5, seed=0)
    adapt, test = parts["adapt"], parts["test"]
    assert labels[adapt].bincount().tolist() == [5, 2, 5]
    assert labels[test].bincount().tolist() == [5, 1, 1]
    assert not set(adapt.tolist()) & set(test.tolist())
    assert torch.equal(adapt_test_split(labels, 5, 0)["adapt"], adapt)
    assert not torch.equal(adapt_test_split(labels, 5, 1)["adapt"], adapt)


# --- ImageNet family --------------------------------------------------------


def test_decode_resizes_the_shorter_side_then_crops_the_centre(tmp_path):
    array = np.zeros((256, 512, 3), dtype=np.uint8)
    array[:, :256, 0] = 255  # left half red
    array[:, 256:, 2] = 255  # right half blue
    write_png(tmp_path / "wide.png", array, "PNG")
    image = decode_image(tmp_path / "wide.png", resolution=224, resize=256)
    assert image.shape == (3, 224, 224)
    assert image[0, :, :100].float().mean() > 250 and image[2, :, 124:].float().mean() > 250
    square = decode_image(tmp_path / "wide.png", resolution=32)  # no resize: shorter side to 32
    assert square.shape == (3, 32, 32)
    write_png(tmp_path / "exact.png", coded_images([3], res=224)[0], "PNG")
    exact = decode_image(tmp_path / "exact.png", resolution=224, resize=256)  # already 224: as is
    assert torch.equal(exact, torch.from_numpy(coded_images([3], res=224)[0]).permute(2, 0, 1))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataLayoutError, match="cannot decode image"):
        decode_image(tmp_path / "broken.jpg", 32)


def test_imagenet_folders_map_wnids_to_class_indices_and_large_splits_stay_file_lists(tmp_path):
    wnids = imagenet_sample()
    for split in ("train", "val"):
        write_wnid_folders(tmp_path / "raw" / split, wnids, per_class=4)
    catalog = open_dataset("imagenet", tmp_path / "raw")
    assert sorted(catalog["val"].labels.unique().tolist()) == [0, 500, 999]
    out = tmp_path / "data"
    paths = prepare_splits("imagenet", out, root=tmp_path / "raw", k_adapt_per_class=1, cache_max_images=1000)
    # train (1.28 M published) and test (49,000) are file lists; adapt (1,000) is decoded.
    assert {s: p.suffix for s, p in paths.items()} == {"train": ".tsv", "adapt": ".safetensors", "test": ".tsv"}
    test = load_split(paths["test"])
    assert isinstance(test, FileSplit) and len(test) == 9 and test.split == "test" and test.dataset == "imagenet"
    assert test.labels.bincount(minlength=1000)[[0, 500, 999]].tolist() == [3, 3, 3]
    batch = test.load(torch.tensor([0, 4]))
    assert batch.shape == (2, 3, 224, 224) and batch.dtype == torch.uint8
    assert torch.equal(test.images[[0, 4]], batch) and test.images.shape == (9, 3, 224, 224)
    x, y = test.as_float(3)
    assert x.shape == (3, 3, 224, 224) and x.max() <= 1 and torch.equal(y, test.labels[:3])
    adapt = load_split(paths["adapt"])
    assert isinstance(adapt, ImageSplit) and adapt.labels.tolist() == [0, 500, 999]
    # The file list names the root once; paths are relative to it.
    text = paths["train"].read_text().splitlines()
    assert text[0] == "# robustsoup-filelist/1" and any(line.startswith("# root=") for line in text)
    assert text[-1].startswith("train/") and text[-1].endswith("\t999")


def test_split_storage_is_decided_from_the_spec_alone():
    imagenet, cifar = get_dataset_spec("imagenet"), get_dataset_spec("cifar10")
    assert split_storage(imagenet, "train") == "tsv" and split_storage(imagenet, "test") == "safetensors"
    assert split_storage(imagenet, "test", cache_max_images=10_000, k=1) == "tsv"
    assert split_storage(cifar, "train", cache_max_images=10) == "safetensors"  # CIFAR is always decoded
    paths = split_paths("imagenet-r", "out", k_adapt_per_class=1, cache_max_images=1000)
    assert {s: p.name for s, p in paths.items()} == {"adapt": "adapt.safetensors", "test": "test.tsv"}


def test_a_training_subset_sizes_the_train_split_storage_by_itself():
    imagenet = get_dataset_spec("imagenet")
    # 100 per class × 1,000 classes = 100,000: decoded at the default cache_max_images; one more is a file list.
    assert split_storage(imagenet, "train", train_per_class=100) == "safetensors"
    assert split_storage(imagenet, "train", train_per_class=101) == "tsv"
    assert split_storage(imagenet, "train", train_per_class=5000) == "tsv"  # capped at the published 1.28 M
    assert split_storage(imagenet, "test", cache_max_images=10_000, k=1, train_per_class=1) == "tsv"  # train only
    paths = split_paths("imagenet", "out", k_adapt_per_class=1, cache_max_images=10_000, train_per_class=10)
    assert {s: p.name for s, p in paths.items()} == {
        "train": "train.safetensors",
        "adapt": "adapt.safetensors",
        "test": "test.tsv",
    }
    # A shift has no train split: the key changes nothing there.
    assert split_paths("imagenet-r", "out", train_per_class=1) == split_paths("imagenet-r", "out")


def test_a_test_subset_sizes_the_test_split_storage_by_itself(tmp_path):
    imagenet = get_dataset_spec("imagenet")
    # 10 per class × 1,000 classes = 10,000: decoded at cache_max_images 10,000; one more is a file list.
    assert split_storage(imagenet, "test", cache_max_images=10_000, k=1, test_per_class=10) == "safetensors"
    assert split_storage(imagenet, "test", cache_max_images=10_000, k=1, test_per_class=11) == "tsv"
    assert split_storage(imagenet, "train", test_per_class=1) == "tsv"  # test only
    assert split_storage(imagenet, "adapt", cache_max_images=999, k=1, test_per_class=1) == "tsv"
    # A shift's part too: ImageNet-R's 30,000 images less 200 for adapt, or 5 × 200 classes.
    assert split_paths("imagenet-r", "out", part="all", k_adapt_per_class=1, cache_max_images=1000)["test"].suffix == (
        ".tsv"
    )
    shift = split_paths("imagenet-r", "out", part="all", k_adapt_per_class=1, cache_max_images=1000, test_per_class=5)
    assert shift["test"].suffix == ".safetensors"
    # prepare_splits writes what split_paths names: the same images, decoded or listed.
    wnids = imagenet_sample()
    for split in ("train", "val"):
        write_wnid_folders(tmp_path / "raw" / split, wnids, per_class=4)
    common = {"root": tmp_path / "raw", "k_adapt_per_class": 1, "test_per_class": 2}
    listed = prepare_splits("imagenet", tmp_path / "list", cache_max_images=1999, **common)
    decoded = prepare_splits("imagenet", tmp_path / "decoded", cache_max_images=2000, **common)
    assert listed == split_paths(
        "imagenet", tmp_path / "list", k_adapt_per_class=1, cache_max_images=1999, test_per_class=2
    )
    assert (listed["test"].suffix, decoded["test"].suffix) == (".tsv", ".safetensors")
    as_list, as_images = load_split(listed["test"]), load_split(decoded["test"])
    assert isinstance(as_list, FileSplit) and as_list.metadata["test_per_class"] == "2"
    assert as_list.labels.bincount(minlength=1000)[[0, 500, 999]].tolist() == [2, 2, 2]
    assert torch.equal(as_images.images, as_list.load(torch.arange(6))) and as_images.metadata["test_per_class"] == "2"


def test_imagenet_r_and_a_labels_index_their_200_classes(tmp_path):
    for name in ("imagenet-r", "imagenet-a"):
        wnids = subset_sample(name)
        write_wnid_folders(tmp_path / name / name, wnids, per_class=2, ext=".jpg")  # archive folder inside root
        catalog = open_dataset(name, tmp_path / name)
        source = catalog["all"]
        assert sorted(source.labels.unique().tolist()) == [0, 100, 199]
        # label j ↔ ImageNet class subset_indices(name)[j]
        imagenet_classes = subset_indices(name)[source.labels]
        expected = torch.tensor([wnid_to_index()[p.parent.name] for p in source.paths])
        assert torch.equal(imagenet_classes, expected)
        spec = get_dataset_spec(name)
        assert spec.num_classes == 200 and spec.class_subset == name and spec.base == "imagenet"
    # A class outside the subset means the folder is something else.
    write_wnid_folders(tmp_path / "wrong", ["n01440764"], per_class=1)  # tench: not in ImageNet-R
    with pytest.raises(DataLayoutError, match="not classes of this data set"):
        open_dataset("imagenet-r", tmp_path / "wrong")["all"]


def test_imagenet_sketch_and_v2_numbered_folders(tmp_path):
    write_wnid_folders(tmp_path / "sk" / "sketch", imagenet_sample(), per_class=2, ext=".JPEG")
    sketch = open_dataset("imagenet-sketch", tmp_path / "sk")["all"]
    assert sorted(sketch.labels.unique().tolist()) == [0, 500, 999]
    write_wnid_folders(tmp_path / "v2", ["0", "2", "10", "999"], per_class=2, ext=".jpeg")
    v2 = open_dataset("imagenet-v2", tmp_path / "v2")["all"]
    # Folder "10" is class 10 (not sorted-string position 1), "999" is 999.
    assert sorted(set(zip([p.parent.name for p in v2.paths], v2.labels.tolist()))) == [
        ("0", 0),
        ("10", 10),
        ("2", 2),
        ("999", 999),
    ]
    paths = prepare_splits("imagenet-v2", tmp_path / "out", root=tmp_path / "v2", k_adapt_per_class=1)
    assert set(paths) == {"adapt", "test"}
    assert load_split(paths["adapt"]).labels.tolist() == [0, 2, 10, 999]


def test_cifar10_c_rows_follow_hendrycks_severity_order(tmp_path):
    labels = write_hendrycks_npy(tmp_path / "CIFAR-10-C", ["fog", "snow"], n=8)
    catalog = open_dataset("cifar10-c", tmp_path)  # the archive's CIFAR-10-C/ folder is found
    assert len(catalog) == 10 and "fog/3" in catalog and "snow/5" in catalog
    part = catalog["fog/3"]
    images = part.load(torch.arange(8))
    assert images.shape == (8, 3, 32, 32)
    assert (images[:, 0] == 30).all()  # fog is corruption 0, severity 3 → rows 16…23
    assert images[:, 1, 0, 0].tolist() == list(range(8))
    assert torch.equal(part.labels, torch.as_tensor(labels))
    assert (catalog["snow/1"].load([0])[:, 0] == 11).all()
    written = prepare_shift_splits("cifar10-c", tmp_path, tmp_path / "out", parts=["snow/2"], k_adapt_per_class=1)
    adapt = load_split(written["snow/2"]["adapt"])
    assert written["snow/2"]["adapt"] == tmp_path / "out" / "snow" / "2" / "adapt.safetensors"
    assert len(adapt) == 4 and (adapt.images[:, 0] == 21).all()
    assert len(load_split(written["snow/2"]["test"])) == 4


def test_cifar10_c_labels_of_the_wrong_length_are_refused_with_both_shapes(tmp_path):
    """labels.npy must hold the test labels once per severity, as many rows as each corruption array."""
    root = tmp_path / "CIFAR-10-C"
    labels = write_hendrycks_npy(root, ["fog"], n=8)
    np.save(root / "labels.npy", np.tile(labels, 5)[:-1])  # 39 rows: not 5·N
    with pytest.raises(DataLayoutError, match=r"labels of shape \(5·N,\).*found int64 \(39,\)"):
        open_dataset("cifar10-c", tmp_path)["fog/3"].load([0])
    np.save(root / "labels.npy", np.tile(labels, 4).astype(np.int64)[:30])  # 5·6 rows, the arrays have 5·8
    with pytest.raises(DataLayoutError, match=r"wrong shape: expected uint8 \(30, 32, 32, 3\).*found uint8 \(40, 32"):
        open_dataset("cifar10-c", tmp_path)["fog/3"].load([0])
    # the layout corrupt_split writes (read_corrupted_split) refuses the same files
    from robustsoup.data.corruptions import read_corrupted_split

    with pytest.raises(ValueError, match=r"expected uint8 of shape \(30, H, W, 3\).*found uint8 \(40, 32, 32, 3\)"):
        read_corrupted_split(root, "fog", 3)
    np.save(root / "labels.npy", np.tile(labels, 5)[:-1])
    with pytest.raises(ValueError, match=r"expected integer labels of shape \(5·N,\).*found int64 \(39,\)"):
        read_corrupted_split(root, "fog", 3)


def test_imagenet_c_folders_by_corruption_and_severity(tmp_path):
    wnids = imagenet_sample(2)
    for s in range(1, 6):
        write_wnid_folders(tmp_path / "noise" / "gaussian_noise" / str(s), wnids, per_class=2, size=(224, 224))
    catalog = open_dataset("imagenet-c", tmp_path)  # Hendrycks' category folders work
    assert list(catalog) == [f"gaussian_noise/{s}" for s in range(1, 6)]
    part = catalog["gaussian_noise/4"]
    assert len(part) == 4 and sorted(part.labels.unique().tolist()) == [0, 500]
    assert all("/4/" in str(p) for p in part.paths)
    assert part.load([0]).shape == (1, 3, 224, 224)
