import pytest
import torch

from robustsoup.data import get_dataset_spec, load_split, prepare_splits, stratified_split


def test_digits_reader_gives_32px_rgb_uint8():
    images, labels = get_dataset_spec("digits").reader()
    assert images.shape == (1797, 3, 32, 32) and images.dtype == torch.uint8
    assert labels.unique().tolist() == list(range(10))


def test_stratified_split_is_disjoint_balanced_and_fixed():
    labels = torch.arange(10).repeat_interleave(30)
    first = stratified_split(labels, n_adapt=50, n_test=100, seed=3)
    again = stratified_split(labels, n_adapt=50, n_test=100, seed=3)
    assert all(torch.equal(first[k], again[k]) for k in first)
    sets = [set(first[k].tolist()) for k in ("train", "adapt", "test")]
    assert sum(map(len, sets)) == 300 and len(set.union(*sets)) == 300
    assert len(first["test"]) == 100 and len(first["adapt"]) == 50
    assert labels[first["test"]].bincount().tolist() == [10] * 10
    # Interleaved by class: the first 10 test images hold one of each class.
    assert sorted(labels[first["test"][:10]].tolist()) == list(range(10))
    with pytest.raises(ValueError, match="leaves no training images"):
        stratified_split(labels, n_adapt=200, n_test=100, seed=0)


def test_prepared_splits_load_back_and_bad_files_say_so(tmp_path):
    paths = prepare_splits("digits", tmp_path, n_adapt=100, n_test=200, seed=0)
    test = load_split(paths["test"])
    assert len(test) == 200 and test.split == "test" and test.dataset == "digits"
    x, _y = test.as_float(16)
    assert x.shape == (16, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    with pytest.raises(FileNotFoundError, match="prepare_data"):
        load_split(tmp_path / "missing.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="unreadable or truncated"):
        load_split(garbage)
