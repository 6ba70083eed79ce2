"""Corrupted copies of a split on disk: the ImageNet-C layout of a file list, Hendrycks' arrays of a decoded
split, and reading either back as a split in the clean split's order."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from robustsoup.data import FileSplit, ImageSplit, load_split, prepare_splits
from robustsoup.data.corrupted import (
    JPEG_QUALITY,
    copy_names,
    corrupted_split,
    split_head,
    write_corrupted_copies,
    write_corrupted_files,
)
from robustsoup.data.corruptions import corrupt, read_corrupted_split
from robustsoup.data.sources import DataLayoutError
from robustsoup.evaluate.shifts import evaluation_sets

from data_fixtures import imagenet_sample, write_png, write_wnid_folders

CORRUPTIONS = ["contrast", "pixelate"]
SEVERITIES = [2, 3]


@pytest.fixture(scope="module")
def imagenet_test(tmp_path_factory) -> FileSplit:
    """The test split of a 3-class ImageNet fixture (3 images per class after 1 for adapt), a file list."""
    root = tmp_path_factory.mktemp("imagenet")
    for part in ("train", "val"):
        write_wnid_folders(root / "raw" / part, imagenet_sample(), per_class=4)
    paths = prepare_splits("imagenet", root / "data", root=root / "raw", k_adapt_per_class=1, cache_max_images=0)
    test = load_split(paths["test"])
    assert isinstance(test, FileSplit) and len(test) == 9
    return test


@pytest.fixture(scope="module")
def written(imagenet_test, tmp_path_factory):
    out = tmp_path_factory.mktemp("corrupted") / "test"
    folders = write_corrupted_copies(imagenet_test, out, CORRUPTIONS, SEVERITIES, seed=5)
    return out, folders


def test_a_file_list_is_written_in_the_imagenet_c_layout_as_jpegs(imagenet_test, written):
    out, folders = written
    assert folders == {c: out / c for c in CORRUPTIONS}
    names = copy_names(imagenet_test)
    assert names[0] == f"{imagenet_test.paths[0].parent.name}/{imagenet_test.paths[0].name}"  # same folder and name
    for corruption in CORRUPTIONS:
        for severity in SEVERITIES:
            files = sorted(
                p.relative_to(out / corruption / str(severity)).as_posix()
                for p in out.glob(f"{corruption}/{severity}/*/*")
            )
            assert files == sorted(names)
    reference = out.parent / "reference.jpg"
    Image.new("RGB", (224, 224)).save(reference, format="JPEG", quality=JPEG_QUALITY)
    with Image.open(out / "contrast" / "3" / names[0]) as image, Image.open(reference) as at_85:
        assert image.format == "JPEG" and image.size == (224, 224)
        assert JPEG_QUALITY == 85 and image.quantization == at_85.quantization  # saved at quality 85


def test_round_trip_keeps_order_labels_and_pixels_up_to_jpeg(imagenet_test, written):
    out, _ = written
    clean = imagenet_test.load(torch.arange(len(imagenet_test)))
    for corruption in CORRUPTIONS:
        copies = corrupted_split(out, imagenet_test, corruption, 3, SEVERITIES)
        assert isinstance(copies, FileSplit) and copies.split == f"test:{corruption}/3"
        assert torch.equal(copies.labels, imagenet_test.labels)
        read = copies.load(torch.arange(len(copies))).float()
        expected = torch.from_numpy(
            np.stack([corrupt(clean[i : i + 1], corruption, 3, seed=5, index_offset=i)[0].numpy() for i in range(9)])
        ).float()
        errors = (read[:, None] - expected[None]).abs().mean(dim=(2, 3, 4))  # copy i against expected j
        assert (errors.diagonal() < 4).all(), errors.diagonal()  # quality-85 JPEG of the right image …
        assert (errors.argmin(dim=1) == torch.arange(9)).all()  # … and of no other image
        assert torch.equal(copies.images[2:5], copies.load(torch.arange(2, 5)))  # the lazy view slices


def test_chunking_does_not_change_a_byte(imagenet_test, written, tmp_path):
    out, _ = written
    write_corrupted_files(imagenet_test, tmp_path / "one", ["pixelate"], [2], seed=5, chunk_size=1)
    for name in copy_names(imagenet_test):
        assert (tmp_path / "one" / "pixelate" / "2" / name).read_bytes() == (out / "pixelate" / "2" / name).read_bytes()


def test_missing_corruption_severity_or_file_is_a_clear_error(imagenet_test, written, tmp_path):
    out, _ = written
    with pytest.raises(DataLayoutError, match=r"no folder for fog .* found corruptions: contrast, pixelate"):
        corrupted_split(out, imagenet_test, "fog", 3, SEVERITIES)
    with pytest.raises(DataLayoutError, match=r"severity 5 of contrast\); found severities: 2, 3"):
        corrupted_split(out, imagenet_test, "contrast", 5, SEVERITIES)
    with pytest.raises(DataLayoutError, match="does not exist"):
        corrupted_split(tmp_path / "nowhere", imagenet_test, "contrast", 3, SEVERITIES)
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "contrast" / "3" / copy_names(imagenet_test)[4]).unlink()
    with pytest.raises(DataLayoutError, match=r"1 of 9 copies of contrast severity 3 are missing"):
        corrupted_split(copy, imagenet_test, "contrast", 3, SEVERITIES)


def test_an_imagenet_c_unpacked_by_family_stands_in_for_generated_copies(imagenet_test, written, tmp_path):
    """Hendrycks' archives unpack as <family>/<corruption>/<severity>/<wnid>/<file>, inside one folder."""
    out, _ = written
    shutil.copytree(out / "contrast", tmp_path / "ImageNet-C" / "digital" / "contrast")
    copies = corrupted_split(tmp_path, imagenet_test, "contrast", 2, SEVERITIES)
    assert torch.equal(copies.load([0, 8]), corrupted_split(out, imagenet_test, "contrast", 2, SEVERITIES).load([0, 8]))


def test_a_decoded_split_gets_hendrycks_arrays_checked_against_its_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 255, (6, 3, 32, 32), dtype=np.uint8))
    split = ImageSplit(images, torch.tensor([0, 1, 2, 0, 1, 2]), "cifar10", "test")
    written = write_corrupted_copies(split, tmp_path / "c", ["contrast"], [3, 1], seed=2)
    assert set(written) == {"contrast", "labels"}
    copies = corrupted_split(tmp_path / "c", split, "contrast", 3, [1, 3])
    expected, _ = read_corrupted_split(tmp_path / "c", "contrast", 3, severities=[1, 3])
    assert isinstance(copies, ImageSplit) and torch.equal(copies.images, expected)
    assert torch.equal(split_head(copies, 4).images, expected[:4]) and len(split_head(copies, 40)) == 6
    mixture = evaluation_sets(split, tmp_path / "c", ["contrast"], [1, 3], seed=0)["digital"]
    assert isinstance(mixture, ImageSplit) and torch.equal(mixture.labels, split.labels)
    at = {s: corrupted_split(tmp_path / "c", split, "contrast", s, [1, 3]).images for s in (1, 3)}
    assert all(torch.equal(mixture.images[i], at[1][i]) or torch.equal(mixture.images[i], at[3][i]) for i in range(6))
    other = ImageSplit(images, torch.tensor([1, 1, 2, 0, 1, 2]), "cifar10", "test")
    with pytest.raises(DataLayoutError, match="copies of another split"):
        corrupted_split(tmp_path / "c", other, "contrast", 3, [1, 3])
    with pytest.raises(DataLayoutError, match="no labels.npy"):
        corrupted_split(tmp_path / "elsewhere", split, "contrast", 3, [1, 3])


def test_copies_of_non_jpeg_files_are_named_jpeg_and_clashing_names_are_refused(tmp_path):
    array = np.zeros((10, 10, 3), dtype=np.uint8)
    for name in ("a.png", "a.bmp", "b.jpg"):
        write_png(tmp_path / "n01440764" / name, array)
    labels = torch.zeros(2, dtype=torch.int64)
    ok = FileSplit([tmp_path / "n01440764" / n for n in ("a.png", "b.jpg")], labels, "imagenet", "test", 224)
    assert copy_names(ok) == ["n01440764/a.JPEG", "n01440764/b.jpg"]
    clash = FileSplit([tmp_path / "n01440764" / n for n in ("a.png", "a.bmp")], labels, "imagenet", "test", 224)
    with pytest.raises(DataLayoutError, match="share a corrupted copy's name"):
        copy_names(clash)


def test_family_mixtures_of_a_file_list_stay_file_lists(imagenet_test, written):
    out, _ = written
    sets = evaluation_sets(imagenet_test, out, CORRUPTIONS, SEVERITIES, seed=0)
    assert list(sets) == ["clean", "digital"]
    mixture = sets["digital"]
    assert isinstance(mixture, FileSplit) and torch.equal(mixture.labels, imagenet_test.labels)
    names = copy_names(imagenet_test)
    for i, path in enumerate(mixture.paths):
        assert path.relative_to(out).parts[0] in CORRUPTIONS and int(path.parent.parent.name) in SEVERITIES
        assert path.as_posix().endswith(names[i])
