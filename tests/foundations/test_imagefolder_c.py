"""Corrupted copies of your own ImageFolder read from a -C-style folder (``imagefolder-c``):
``CROOT/<corruption>/<severity>/<class>/<image>``, checked while the workflow parses, split as a shift,
and standing in for the generated copies of the adapt and test splits (``data.corrupted_from``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from robustsoup.cli import main
from robustsoup.config import ConfigError
from robustsoup.data import load_split
from robustsoup.data.check import check_run_data
from robustsoup.data.corrupted import corrupted_split
from robustsoup.data.sources import DataLayoutError
from robustsoup.data.stages import prepare_data, prepare_shift
from robustsoup.paths import RunPaths
from robustsoup.run_config import resolve_config

CLASSES = [f"c{i}" for i in range(7)]
LEVELS = {"fog": [1, 2], "contrast": [1, 2]}


def write_image(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)


@pytest.fixture
def trees(tmp_path):
    """A 7-class tree (3 train, 4 test images per class, 48×48 PNGs) and its -C folder: each test image
    inverted (a stand-in for a corruption made elsewhere) under every corruption and severity, same names."""
    rng = np.random.default_rng(0)
    root, croot = tmp_path / "seven", tmp_path / "seven-c"
    for split, n in (("train", 3), ("test", 4)):
        for label, name in enumerate(CLASSES):
            for i in range(n):
                image = (20 * label + rng.integers(0, 9, (48, 48, 3))).astype(np.uint8)
                write_image(root / split / name / f"{i}.png", image)
                if split == "test":
                    for corruption, severities in LEVELS.items():
                        for s in severities:
                            write_image(croot / corruption / str(s) / name / f"{i}.png", 255 - image)
    return root, croot


def config_of(root, croot, **data):
    return {
        "dataset": "imagefolder",
        "device": "cpu",
        "threats": {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0},
        "rws": {"enabled": False},  # its default corruptions are not the two here
        "data": {
            "root": str(root),
            "name": "seven",
            "resolution": 48,
            "k_adapt_per_class": 1,
            "corruptions": list(LEVELS),
            "severities": [1, 2],
            "shifts": {"imagefolder-c": str(croot)},
            **data,
        },
    }


def test_corrupted_copies_are_read_from_the_folder_instead_of_generated(trees, tmp_path, monkeypatch):
    root, croot = trees
    monkeypatch.chdir(tmp_path)
    config = resolve_config(config_of(root, croot, corrupted_from="imagefolder-c"))
    check_run_data(config)  # the workflow's parse-time check, the -C folder included
    paths = RunPaths(config)
    assert paths.data["train"].endswith(".safetensors")  # small: decoded
    assert paths.data["adapt"].endswith(".tsv") and paths.data["test"].endswith(".tsv")  # copies found by name
    assert paths.corrupted_dir("test") == paths.corrupted_dir("adapt") == str(croot)
    prepare_data(config, paths.data)
    test = load_split(paths.data["test"])
    assert len(test) == 7 * 3
    copies = corrupted_split(paths.corrupted_dir("test"), test, "fog", 2, [1, 2])
    assert torch.equal(copies.labels, test.labels)
    assert torch.equal(copies.load(torch.arange(len(test))), 255 - test.load(torch.arange(len(test))))
    adapt = load_split(paths.data["adapt"])
    assert torch.equal(corrupted_split(croot, adapt, "contrast", 1, [1, 2]).load([0]), 255 - adapt.load([0]))


def test_the_folder_is_split_as_a_shift_of_the_tree(trees, tmp_path, monkeypatch):
    root, croot = trees
    monkeypatch.chdir(tmp_path)
    config = resolve_config(config_of(root, croot))
    paths = RunPaths(config)
    assert paths.corrupted_dir("test").endswith("data/corrupted/test")  # generate: corrupt_split's folder
    assert sorted(paths.shifts["imagefolder-c"]) == ["contrast/1", "contrast/2", "fog/1", "fog/2"]
    prepare_shift(config, "imagefolder-c", paths.shift_dir("imagefolder-c"))
    part = load_split(paths.shifts["imagefolder-c"]["fog/2"]["test"])
    assert len(part) == 7 * 3 and part.labels.unique().tolist() == list(range(7))


def test_data_check_reads_the_folder(trees, capsys):
    _, croot = trees
    arguments = ["data", "check", "--dataset", "imagefolder-c", "--root", str(croot), "--resolution", "48"]
    assert main([*arguments, "--corruptions", "fog,contrast", "--severities", "1,2"]) == 0
    out = capsys.readouterr().out
    assert "corruptions × severities: 2 × 2" in out and "28 images, 7 classes" in out


def test_a_folder_that_lacks_a_corruption_or_a_copy_fails_with_what_is_missing(trees, tmp_path, monkeypatch):
    root, croot = trees
    monkeypatch.chdir(tmp_path)
    config = resolve_config(config_of(root, croot, corrupted_from="imagefolder-c", corruptions=["fog", "snow"]))
    with pytest.raises(ConfigError, match=r"(?s)data.shifts.imagefolder-c.*snow not found"):
        check_run_data(config)
    config = resolve_config(config_of(root, croot, corrupted_from="imagefolder-c"))
    paths = RunPaths(config)
    prepare_data(config, paths.data)
    (croot / "fog" / "1" / "c3" / "2.png").unlink()
    with pytest.raises(DataLayoutError, match=r"1 of 21 copies of fog severity 1 are missing.*c3/2.JPEG"):
        corrupted_split(croot, load_split(paths.data["test"]), "fog", 1, [1, 2])
    with pytest.raises(ConfigError, match=r"'data.corrupted_from': imagefolder-c .* needs dataset: imagefolder"):
        resolve_config(config_of(root, croot, corrupted_from="imagefolder-c", shifts={}))
