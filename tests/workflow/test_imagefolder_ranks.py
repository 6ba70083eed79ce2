"""Your own ImageFolder with gpus: 2 and with soup-for: the DAG asks for gpu=2 (dry run), the parent
trains as two gloo ranks on the CPU (spawned processes that never resolved the config), and soup-for
sizes new images from the checkpoints' sidecars in a process that does not know the ImageFolder."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from robustsoup.checkpoint import load_checkpoint
from robustsoup.cli import main
from robustsoup.data import DATASETS
from robustsoup.data.stages import prepare_data
from robustsoup.lp.stages import finetune, pretrain
from robustsoup.paths import RunPaths
from robustsoup.resources import TrainingResources
from robustsoup.run_config import resolve_config

from snakemake_output import job_stats, snakemake_command

CLASSES = ["ant", "bee", "cat"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """3 classes, 6 train and 3 test images each, 40×40 PNGs (noise around a colour per class)."""
    root = tmp_path_factory.mktemp("tree") / "three"
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 3)):
        for label, name in enumerate(CLASSES):
            for i in range(n):
                image = np.clip([60 + 60 * label, 200 - 60 * label, 120] + rng.normal(0, 20, (40, 40, 3)), 0, 255)
                path = root / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image.astype(np.uint8)).save(path)
    return root


def config_of(root, gpus=1) -> dict:
    training = {"epochs": 1, "lr": 0.01, "batch_size": 6, "attack_steps": 1}
    return {
        "dataset": "imagefolder",
        "device": "cpu",
        "threats": {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0},
        "data": {"root": str(root), "name": "three", "resolution": 32, "k_adapt_per_class": 1},
        "model": {"architecture": "preact_resnet_small", "width": 4},
        "pretrain": {"norm": "Linf", **training, "gpus": gpus},
        "references": [],
        "finetune": {"nominal": {"norm": "none", **training}},
        "soups": {"lines": [["linf", "linf-nominal"]], "ensembles": [], "ternary": {"enabled": False}},
        "rws": {"enabled": False},
        "distill": {"enabled": False},
    }


@pytest.mark.workflow
def test_the_dag_resolves_with_two_gpus_for_the_parent(tree, tmp_path, monkeypatch):
    config = config_of(tree, gpus=2)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    command = snakemake_command(tmp_path, path, "--dry-run", "--resources", "gpu=2")
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = job_stats(result.stdout + result.stderr)
    assert jobs["prepare_data"] == 1 and jobs["pretrain"] == 1 and jobs["finetune"] == 1 and jobs["make_soup"] > 0
    monkeypatch.chdir(tmp_path)
    resources = TrainingResources(resolve_config(config))  # rule pretrain's resources: gpu=T.gpus("pretrain")
    assert resources.gpus("pretrain") == 2 and resources.gpus("finetune", "nominal") == 1


@pytest.fixture(scope="module")
def models(tree, tmp_path_factory):
    """The parent trained with gpus: 2 (two spawned gloo ranks) and its clean fine-tune, in results/three/."""
    work = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(work)
        config = resolve_config(config_of(tree, gpus=2))
        paths = RunPaths(config)
        prepare_data(config, paths.data)
        config = resolve_config(config_of(tree, gpus=2))  # as a job does: with the training images' statistics
        parent = work / paths.model("linf")
        pretrain(config, paths.data["train"], parent, torch.device("cpu"))
        child = work / paths.model("linf-nominal")
        finetune(config, "nominal", parent, paths.data["train"], child, torch.device("cpu"))
    return parent, child


def test_the_parent_trains_as_two_ranks(models):
    _, meta = load_checkpoint(models[0])
    assert meta.training["distributed"]["world_size"] == 2
    assert meta.num_classes == 3
    assert meta.provenance["class_names"] == CLASSES and meta.provenance["resolution"] == 32


def test_soup_for_sizes_images_from_the_sidecars(models, tree, tmp_path, monkeypatch, capsys):
    monkeypatch.delitem(DATASETS, "three", raising=False)  # a fresh process: the ImageFolder is not registered
    out = tmp_path / "soup.safetensors"
    assert main(["soup-for", str(tree / "test"), str(models[0]), str(models[1]), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"9 images from {tree / 'test'} (32 px, as three)" in printed
    state, meta = load_checkpoint(out)
    assert meta.num_classes == 3 and state["net.linear.weight"].shape[0] == 3
    assert meta.provenance["class_names"] == CLASSES and meta.provenance["resolution"] == 32
    assert meta.provenance["soup_for"]["images"] == 9
    assert json.loads(out.with_suffix(".json").read_text())["dataset"] == "three"
