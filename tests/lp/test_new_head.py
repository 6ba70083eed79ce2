"""Your own model on your own data, end to end through the stage functions: a local weights file of
1,000 classes (ImageNet's), adversarially fine-tuned on a 7-class ImageFolder, gets a new head, and the
log and the parent's sidecar say so."""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from robustsoup.checkpoint import load_checkpoint
from robustsoup.data.stages import prepare_data
from robustsoup.lp.stages import pretrain
from robustsoup.models import create_model
from robustsoup.paths import RunPaths
from robustsoup.run_config import resolve_config

CLASSES = [f"c{i}" for i in range(7)]


def test_a_1000_class_file_fine_tuned_adversarially_on_7_classes_gets_a_new_head(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for split, n in (("train", 2), ("test", 2)):
        for label, name in enumerate(CLASSES):
            for i in range(n):
                image = (30 * label + rng.integers(0, 20, (48, 48, 3))).astype(np.uint8)
                path = tmp_path / "seven" / split / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
    torch.manual_seed(0)
    imagenet = create_model("timm:resnet18", 1000, (0,) * 3, (1,) * 3).net.state_dict()
    weights = tmp_path / "resnet18-imagenet.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.items()}, str(weights))
    config = resolve_config(
        {
            "dataset": "imagefolder",
            "device": "cpu",
            "threats": {"Linf": 4 / 255, "L2": 2.0, "L1": 255.0},
            "data": {"root": str(tmp_path / "seven"), "name": "seven", "resolution": 48, "k_adapt_per_class": 1},
            "model": {"architecture": "timm:resnet18", "weights": str(weights)},
            "pretrain": {"norm": "Linf", "epochs": 1, "lr": 1e-9, "batch_size": 14, "attack_steps": 2},
            "references": [],
            "finetune": {},
            "soups": {"lines": [], "ensembles": [], "ternary": {"enabled": False}},
            "rws": {"enabled": False},
            "distill": {"enabled": False},
        }
    )
    paths = RunPaths(config)
    prepare_data(config, paths.data)
    out = tmp_path / "linf.safetensors"
    with caplog.at_level(logging.INFO):
        pretrain(resolve_config(config), paths.data["train"], out, torch.device("cpu"))
    state, meta = load_checkpoint(out)
    assert imagenet["fc.weight"].shape == (1000, 512)
    assert state["net.fc.weight"].shape == (7, 512) and state["net.fc.bias"].shape == (7,)
    # lr 1e-9: every tensor but the head is the file's (BatchNorm's running statistics aside)
    assert torch.allclose(state["net.conv1.weight"], imagenet["conv1.weight"], atol=1e-6)
    assert meta.provenance["head_replaced"] == {
        "keys": ["fc.bias", "fc.weight"],
        "file_classes": 1000,
        "classes": 7,
        "source": str(weights),
    }
    assert meta.provenance["initial_weights"] == str(weights)
    assert meta.provenance["class_names"] == CLASSES
    assert meta.num_classes == 7 and meta.training["norm"] == "Linf" and meta.training["attack_steps"] == 2
    assert "has 1000 classes, the model 7" in caplog.text and "the head is new" in caplog.text
