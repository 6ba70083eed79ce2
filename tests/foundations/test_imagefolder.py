"""Your own data and model: an ImageFolder data set, threat radii per data set, timm / torchvision
architectures by name and a new classifier head for pretrained weights of other classes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from robustsoup.cli import main
from robustsoup.config import ConfigError
from robustsoup.data import get_dataset_spec, load_split
from robustsoup.data.stages import prepare_data
from robustsoup.paths import RunPaths
from robustsoup.run_config import resolve_config

SEVEN = [f"c{i}" for i in range(7)]
THREATS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}


def write_tree(root, classes, per_split, size=(48, 48)):
    rng = np.random.default_rng(0)
    for split, n in per_split.items():
        for label, name in enumerate(classes):
            for i in range(n):
                image = np.full((size[1], size[0], 3), 20 * label, dtype=np.uint8) + rng.integers(
                    0, 9, (size[1], size[0], 3), dtype=np.uint8
                )
                path = root / split / name / f"{i}.png" if split else root / name / f"{i}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(path)
    return root


def imagefolder_config(root, name="seven", **extra):
    data = {"root": str(root), "name": name, "resolution": 48, "k_adapt_per_class": 1}
    data.update(extra.pop("data", {}))
    return {"dataset": "imagefolder", "data": data, "threats": THREATS, "device": "cpu", **extra}


@pytest.fixture
def seven(tmp_path):
    return write_tree(tmp_path / "seven", SEVEN, {"train": 3, "test": 3})


def test_a_seven_class_tree_is_split_with_its_class_names_and_statistics(seven, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = resolve_config(imagefolder_config(seven))
    paths = RunPaths(config)
    assert paths.root == "results/seven"
    spec = get_dataset_spec("seven")
    assert (spec.num_classes, spec.split_scheme, spec.class_names, spec.mean) == (7, "official", tuple(SEVEN), None)
    prepare_data(config, paths.data)
    train = load_split(paths.data["train"])
    assert train.images.shape[1:] == (3, 48, 48) and len(train) == 21
    assert json.loads(train.metadata["class_names"]) == SEVEN
    assert json.loads(load_split(paths.data["test"]).metadata["class_names"]) == SEVEN
    expected = train.images.double().div(255).mean(dim=(0, 2, 3))
    resolve_config(config)  # a job resolves again and finds the statistics in the cache
    assert get_dataset_spec("seven").mean == pytest.approx(expected.tolist(), abs=1e-5)


def test_one_folder_is_split_stratified_and_bigger_images_are_cropped(tmp_path):
    root = write_tree(tmp_path / "flat", ["a", "b"], {"": 20}, size=(64, 50))
    config = resolve_config(imagefolder_config(root, "flat", data={"n_adapt": 10, "n_test": 10}))
    spec = get_dataset_spec("flat")
    assert (spec.split_scheme, spec.num_classes, spec.nominal_sizes) == ("stratified", 2, {"all": 40})
    from robustsoup.data import prepare_splits

    written = prepare_splits("flat", tmp_path / "out", n_adapt=10, n_test=10, root=config["data"]["root"])
    assert load_split(written["train"]).images.shape == (20, 3, 48, 48)


def test_data_check_passes_on_the_tree(seven, capsys):
    assert main(["data", "check", "--dataset", "imagefolder", "--root", str(seven), "--resolution", "48"]) == 0
    out = capsys.readouterr().out
    assert "7 classes" in out and "21 images" in out


def test_a_tree_of_one_class_is_refused(tmp_path):
    root = write_tree(tmp_path / "one", ["only"], {"train": 2, "test": 2})
    with pytest.raises(ConfigError, match="at least two"):
        resolve_config(imagefolder_config(root, "one"))


@pytest.mark.parametrize("eps", [8, 1.5])
def test_linf_radii_beyond_one_are_refused_with_the_range(eps):
    with pytest.raises(ConfigError, match=r"must be in \(0, 1\]"):
        resolve_config({"dataset": "cifar10", "threats": {"Linf": eps}})


def test_l2_beyond_the_all_ones_norm_is_refused():
    with pytest.raises(ConfigError, match=r"\(0, 55.4256\] at 32 px"):
        resolve_config({"dataset": "cifar10", "threats": {"L2": 60}})


def test_imagefolder_must_state_its_radii(seven):
    config = imagefolder_config(seven)
    del config["threats"]
    with pytest.raises(ConfigError, match="must state every ε"):
        resolve_config(config)


def test_each_data_set_has_its_documented_radii(tmp_path, capsys):
    assert resolve_config({"dataset": "cifar10"})["threats"] == {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}
    assert resolve_config({"dataset": "imagenet"})["threats"] == {"Linf": 4 / 255, "L2": 2.0, "L1": 255.0}
    assert resolve_config({})["threats"] == {"Linf": 0.1, "L2": 3.0, "L1": 24.0}
    assert resolve_config({"dataset": "cifar10", "threats": {"L2": 1.0}})["threats"]["Linf"] == 8 / 255
    path = tmp_path / "c.yaml"
    path.write_text("dataset: cifar10\n")
    assert main(["config", str(path)]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["threats"] == {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}
    assert "# threats: Linf 0.0313725 (8/255), L2 0.5, L1 12" in out


def test_timm_and_torchvision_names_build_with_the_data_classes():
    from robustsoup.models import create_model

    model = create_model("timm:resnet18", 7, (0.1,) * 3, (0.2,) * 3).eval()
    assert model(torch.rand(1, 3, 48, 48)).shape == (1, 7)
    assert model.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])  # its pretrained config's
    assert create_model("torchvision:resnet18", 3, (0,) * 3, (1,) * 3).eval()(torch.rand(1, 3, 32, 32)).shape == (1, 3)
    with pytest.raises(KeyError, match="nearest names: .*resnet18"):
        create_model("timm:resnet81", 7, (0,) * 3, (1,) * 3)


def test_weights_of_1000_classes_get_a_new_head_logged_and_recorded(seven, tmp_path, monkeypatch, caplog):
    from safetensors.torch import save_file

    from robustsoup.models import create_model
    from robustsoup.train.run import initial_model, model_identity, new_meta

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    imagenet = create_model("timm:resnet18", 1000, (0,) * 3, (1,) * 3).net
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(tmp_path / "r18.safetensors"))
    model_section = {"architecture": "timm:resnet18", "weights": str(tmp_path / "r18.safetensors")}
    config = resolve_config(imagefolder_config(seven, model=model_section, data={"mean": [0.5] * 3, "std": [0.25] * 3}))
    meta = new_meta(model_identity(config), "linf")
    with caplog.at_level(logging.INFO):
        model = initial_model(config, meta)
    assert model.net.fc.weight.shape == (7, 512) and imagenet.fc.weight.shape == (1000, 512)
    assert torch.equal(model.net.conv1.weight, imagenet.conv1.weight)
    assert meta.provenance["head_replaced"]["file_classes"] == 1000
    assert meta.provenance["head_replaced"]["classes"] == 7
    assert meta.provenance["class_names"] == SEVEN
    assert "the head is new" in caplog.text


def test_apgd_t_runs_with_two_classes_and_one_target():
    from robustsoup.attacks.autoattack import attack_plan, robust_correct
    from robustsoup.models import create_model

    torch.manual_seed(0)
    model = create_model("preact_resnet_small", 2, (0.5,) * 3, (0.3,) * 3, width=4).eval()
    x = torch.rand(4, 3, 16, 16)
    y = model(x).argmax(1)
    plan = attack_plan("standard", "Linf", 2, n_iter=5)
    assert plan.n_target_classes == 1
    assert robust_correct(model, x, y, "Linf", 1e-5, plan).all()  # a tiny ε leaves them right
    assert not robust_correct(model, x, y, "Linf", 1.0, plan).any()  # ε = 1 can paint any image
