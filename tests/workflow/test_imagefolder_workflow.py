"""Your own data and model end to end: a generated 7-class ImageFolder of 48×48 images through all four
studies (config/presets/imagefolder-example.yaml made micro), with ``timm:resnet18`` from random weights
(marked ci: CI runs it, ``make test`` leaves it out) and with ``timm:test_byobnet`` (a small timm
ResNet-like network, the same factory path at a fraction of the cost), and a 2-class one through robust
fine-tuning and the soups (marked ci). Real Snakemake runs. A 1,000-class resnet18 file fine-tuned to 7 classes is
tests/lp/test_new_head.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import REPO
from snakemake_output import snakemake_command

pytestmark = pytest.mark.workflow
PRESET = REPO / "config" / "presets" / "imagefolder-example.yaml"
MICRO = REPO / "tests" / "configs" / "micro.yaml"
SEVEN = [f"class-{c}" for c in "abcdefg"]


def write_tree(root: Path, classes: list[str], per_class: dict[str, int], size: int = 48) -> Path:
    """``root/<split>/<class>/<i>.png``: noise around a per-class colour (learnable); every fourth image
    wider than tall (resized and centre-cropped to ``size``), the rest ``size`` × ``size``."""
    rng = np.random.default_rng(0)
    for split, n in per_class.items():
        for label, name in enumerate(classes):
            colour = np.array([40 + 30 * label, 200 - 25 * label, 90 + 20 * (label % 3)])
            for i in range(n):
                width = size + 12 if i % 4 == 3 else size
                image = np.clip(colour + rng.normal(0, 30, (size, width, 3)), 0, 255).astype(np.uint8)
                path = root / split / name / f"{i:03d}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
    return root


def micro_config(root: Path, name: str, architecture: str = "timm:test_byobnet", **overrides) -> dict:
    """The preset with its data at ``root`` (48 px), ``architecture`` from random weights, and the
    micro config's sizes for every study."""
    config = yaml.safe_load(PRESET.read_text())
    micro = yaml.safe_load(MICRO.read_text())
    config["data"].update(
        root=str(root),
        name=name,
        resolution=48,
        k_adapt_per_class=2,
        corruptions=micro["data"]["corruptions"],
        severities=micro["data"]["severities"],
    )
    config["model"] = {"architecture": architecture, "weights": None}
    config["device"] = "cpu"
    for key in ("pretrain", "references", "finetune", "soups", "evaluate", "distill", "rws"):
        config[key] = micro[key]
    # Fewer models than micro.yaml (each job of a timm model starts slowly): no reference, no L1 fine-tune.
    config["references"] = []
    config["finetune"] = {k: v for k, v in micro["finetune"].items() if k != "l1"}
    config["soups"]["ensembles"] = [["linf", "linf-nominal"]]
    config["soups"]["ternary"]["models"] = ["linf", "linf-l2", "linf-nominal"]
    config.update(overrides)
    return config


def run(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = snakemake_command(tmp_path, path, "--cores", "2")
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    return tmp_path / "results" / config["data"]["name"] / "seed-0"  # the run's one seed


@pytest.fixture(scope="module", params=["timm:test_byobnet", pytest.param("timm:resnet18", marks=pytest.mark.ci)])
def seven_run(request, tmp_path_factory) -> tuple[Path, str]:
    work = tmp_path_factory.mktemp("seven")
    root = write_tree(work / "images", SEVEN, {"train": 10, "test": 6})
    return run(work, micro_config(root, "seven", request.param)), request.param


def test_seven_classes_through_all_four_studies(seven_run):
    seven_run, architecture = seven_run
    metrics = pd.read_csv(seven_run / "metrics" / "all.tsv", sep="\t")
    assert {"lp", "soups-shifts"} <= set(metrics["study"])
    assert metrics["accuracy"].between(0, 1).all()
    for table in ("accuracy.md", "soups_shifts.md"):
        assert (seven_run / "tables" / table).stat().st_size > 0
    assert list((seven_run / "tables").glob("rws*")) and list((seven_run / "tables").glob("distill*"))
    accuracy = pd.read_csv(seven_run / "tables" / "accuracy.csv")
    assert len(accuracy) > 0
    for sidecar in (seven_run / "models").glob("*.json"):
        meta = json.loads(sidecar.read_text())
        if "num_classes" in meta:
            assert meta["num_classes"] == 7, sidecar
            assert meta["dataset"] == "seven"
            assert meta["provenance"]["class_names"] == SEVEN, sidecar
    parent = json.loads((seven_run / "models" / "linf.json").read_text())
    assert parent["training"]["train_split"]["class_names"] == SEVEN
    assert parent["architecture"] == architecture


def test_readme_config_is_the_preset():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Your own data and model", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    assert yaml.safe_load(block) == yaml.safe_load(PRESET.read_text())


@pytest.mark.ci  # a second own-data run (minutes); APGD-T with two classes is a unit test (test_imagefolder.py)
def test_two_classes_fine_tuning_and_soups(tmp_path):
    root = write_tree(tmp_path / "images", ["cat", "dog"], {"train": 16, "test": 8})
    config = micro_config(root, "pair")
    config["rws"] = {"enabled": False}
    config["distill"] = {"enabled": False}
    results = run(tmp_path, config)
    metrics = pd.read_csv(results / "metrics" / "all.tsv", sep="\t")
    shifts = metrics[metrics["study"] == "soups-shifts"]
    assert any(m.startswith("ensemble-") for m in shifts["model"])
    assert "soup-single" in set(shifts["model"])
    assert json.loads((results / "models" / "linf.json").read_text())["num_classes"] == 2
