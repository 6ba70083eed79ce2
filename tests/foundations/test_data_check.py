"""`robustsoup data check` and the workflow's parse-time check: what it prints and how it fails."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import yaml

from robustsoup.cli import main
from robustsoup.data import DataLayoutError, get_dataset_spec
from robustsoup.data.check import check_config_data, check_dataset
from robustsoup.run_config import load_config_file

from conftest import REPO
from data_fixtures import (
    imagenet_sample,
    write_cifar_binaries,
    write_cifar_image_folder,
    write_hendrycks_npy,
    write_wnid_folders,
)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_check_reports_images_per_split_and_classes(tmp_path, capsys):
    write_cifar_image_folder(tmp_path, CLASSES, {"train": 2, "test": 1})
    report = check_dataset("cifar10", tmp_path)
    counts = {p.name: (p.images, p.classes) for p in report.parts}
    assert counts == {"train": (20, 10), "test": (10, 10)}
    assert main(["data", "check", "--dataset", "cifar10", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ImageFolder tree" in out and "20 images, 10 classes" in out and "total" in out
    quick = check_dataset("cifar10", tmp_path, quick=True)
    assert [p.note for p in quick.parts] == ["10 class folders", "10 class folders"]


def test_missing_split_names_the_folder_and_shows_the_layout(tmp_path, capsys):
    write_cifar_image_folder(tmp_path, CLASSES, {"train": 1})
    with pytest.raises(DataLayoutError, match=r"no test/ folder") as error:
        check_dataset("cifar10", tmp_path)
    assert "Expected layout" in str(error.value) and "ROOT/test/<class>/<image>" in str(error.value)
    assert main(["data", "check", "--dataset", "cifar10", "--root", str(tmp_path)]) == 2
    assert "missing split 'test'" in capsys.readouterr().err
    # ImageNet without val/, and CIFAR binaries without a batch file.
    write_wnid_folders(tmp_path / "in" / "train", imagenet_sample(1), per_class=1)
    with pytest.raises(DataLayoutError, match=r"in/val is missing \(split 'val'\)"):
        check_dataset("imagenet", tmp_path / "in")
    folder = write_cifar_binaries(tmp_path / "bin")
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataLayoutError, match="lacks data_batch_3"):
        check_dataset("cifar10", tmp_path / "bin")


def test_missing_root_and_missing_root_setting(tmp_path):
    with pytest.raises(DataLayoutError, match="does not exist or is not a folder"):
        check_dataset("imagenet-r", tmp_path / "nowhere")
    with pytest.raises(DataLayoutError, match="no data root was given"):
        check_dataset("cifar10", None)
    assert check_dataset("digits", None).parts[0].images == 1797


def test_corruption_sets_report_corruptions_and_severities_and_missing_files(tmp_path, capsys):
    write_hendrycks_npy(tmp_path, ["fog", "snow"], n=6)
    report = check_dataset("cifar10-c", tmp_path)
    assert report.corruptions == ["fog", "snow"] and report.severities == [1, 2, 3, 4, 5]
    assert len(report.parts) == 10 and all(p.images == 6 for p in report.parts)
    assert "2 × 5" in report.text()
    with pytest.raises(DataLayoutError, match=r"corruption\(s\) frost not found") as error:
        check_dataset("cifar10-c", tmp_path, corruptions=["fog", "frost"])
    assert f"{tmp_path}/frost.npy" in str(error.value)
    assert (
        main(
            [
                "data",
                "check",
                "--dataset",
                "cifar10-c",
                "--root",
                str(tmp_path),
                "--corruptions",
                "fog,frost",
                "--quick",
            ]
        )
        == 2
    )
    assert "frost" in capsys.readouterr().err
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(DataLayoutError, match="labels.npy is missing"):
        check_dataset("cifar10-c", tmp_path)


def test_wrong_array_shape_is_named_with_expected_and_found(tmp_path):
    write_hendrycks_npy(tmp_path, ["fog"], n=6)
    np.save(tmp_path / "snow.npy", np.zeros((30, 32, 32), dtype=np.uint8))  # no channel axis
    with pytest.raises(
        DataLayoutError, match=r"snow.npy has the wrong shape: expected uint8 \(30, 32, 32, 3\)"
    ) as error:
        check_dataset("cifar10-c", tmp_path, quick=True)
    assert "found uint8 (30, 32, 32)" in str(error.value)
    np.save(tmp_path / "snow.npy", np.zeros((30, 32, 32, 3), dtype=np.float32))
    with pytest.raises(DataLayoutError, match="found float32"):
        check_dataset("cifar10-c", tmp_path, corruptions=["snow"])


def test_config_check_covers_shifts_and_their_base(tmp_path):
    write_hendrycks_npy(tmp_path / "c10c", ["fog"], n=4)
    write_cifar_binaries(tmp_path / "c10")
    config = {
        "dataset": "cifar10",
        "data": {
            "root": str(tmp_path / "c10"),
            "shifts": {"cifar10-c": str(tmp_path / "c10c")},
            "corruptions": ["fog"],
            "severities": [1, 5],
        },
    }
    reports = check_config_data(config)
    assert [r.dataset for r in reports] == ["cifar10", "cifar10-c"]
    assert [p.name for p in reports[1].parts] == ["fog/1", "fog/5"]
    config["data"]["corruptions"] = ["fog", "snow"]
    with pytest.raises(DataLayoutError, match="snow not found"):
        check_config_data(config)
    with pytest.raises(ValueError, match="imagenet-r is a shift of imagenet"):
        check_config_data(
            {"dataset": "cifar10", "data": {"root": str(tmp_path / "c10"), "shifts": {"imagenet-r": str(tmp_path)}}}
        )


def test_presets_are_valid_configs():
    for name in ("cifar10", "imagenet"):
        config = load_config_file(REPO / "config" / "presets" / f"{name}.yaml")
        assert config["dataset"] == name and config["data"]["root"]
    cifar = load_config_file(REPO / "config" / "presets" / "cifar10.yaml")
    assert cifar["threats"] == {"Linf": pytest.approx(8 / 255), "L2": 0.5, "L1": 12.0}
    assert cifar["model"] == {**cifar["model"], "architecture": "preact_resnet18_rf", "activation": "softplus"}
    imagenet = load_config_file(REPO / "config" / "presets" / "imagenet.yaml")
    # The soups paper's eight evaluation sets: ImageNet itself and seven shifts, in its table's order.
    assert list(imagenet["data"]["shifts"]) == [
        "imagenet-real",
        "imagenet-v2",
        "imagenet-a",
        "imagenet-r",
        "imagenet-sketch",
        "cue-conflict",
        "imagenet-c",
    ]
    assert all(get_dataset_spec(shift).base == "imagenet" for shift in imagenet["data"]["shifts"])
    assert all(f["epochs"] == 1 for f in imagenet["finetune"].values())


def test_workflow_fails_at_parse_time_on_a_misplaced_folder(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"dataset": "cifar10", "data": {"root": str(tmp_path / "no-such-folder")}}))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "workflow" / "Snakefile"),
            "--configfile",
            str(config),
            "--dry-run",
            "--cores",
            "1",
            "--directory",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "no-such-folder does not exist" in output and "Expected layout" in output
