"""Model registry additions and offline-first weights: WRN-28-10, timm models, the RobustBench zoo."""

from __future__ import annotations

import importlib.util
import socket
import sys

import pytest
import torch
from safetensors.torch import save_file

from robustsoup.checkpoint import CheckpointError
from robustsoup.models import (
    ARCHITECTURES,
    Normalized,
    ZooError,
    create_model,
    input_statistics,
    load_weights_file,
    load_zoo_model,
    network_forbidden,
    zoo_weights_path,
)
from robustsoup.models.zoo import NetworkForbidden, autoattack_alias, build_zoo_architecture


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve a name or open a connection fails the test."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    return attempts


def test_registry_has_the_papers_architectures():
    assert {
        "preact_resnet_small",
        "preact_resnet18",
        "preact_resnet18_rf",
        "wrn28_10",
        "resnet50",
        "vit_base_patch16_224",
    } <= set(ARCHITECTURES)


def test_wrn28_matches_the_robustbench_parameter_layout():
    with autoattack_alias():  # RobustBench's __init__ imports autoattack, which PyPI calls pyautoattack
        from robustbench.model_zoo.architectures.wide_resnet import WideResNet as Reference
    assert "autoattack" not in sys.modules and importlib.util.find_spec("autoattack") is None  # not global

    torch.manual_seed(0)
    reference = Reference(depth=28, widen_factor=1).eval()
    ours = create_model("wrn28_10", 10, mean=(0.5,) * 3, std=(0.25,) * 3, width=16).eval()
    assert set(ours.net.state_dict()) == set(reference.state_dict())
    ours.net.load_state_dict(reference.state_dict())
    x = torch.rand(3, 3, 32, 32)
    assert torch.allclose(ours(x), reference((x - 0.5) / 0.25), atol=1e-5)
    wide = create_model("wrn28_10", 10, (0,) * 3, (1,) * 3, width=160)
    assert wide.net.fc.in_features == 640 and sum(p.numel() for p in wide.parameters()) == 36_479_194
    with pytest.raises(ValueError, match="multiple of 16"):
        create_model("wrn28_10", 10, (0,) * 3, (1,) * 3, width=20)


def test_timm_resnet50_takes_weights_from_a_local_file(tmp_path, no_network):
    source = create_model("resnet50", 1000, (0.1,) * 3, (0.2,) * 3).eval()
    # timm's own input statistics, not the data set's
    assert source.mean.flatten().tolist() == pytest.approx([0.485, 0.456, 0.406])
    path = tmp_path / "resnet50.safetensors"
    save_file({k: v.contiguous() for k, v in source.net.state_dict().items()}, str(path))
    loaded = create_model("resnet50", 1000, (0.1,) * 3, (0.2,) * 3, weights=path).eval()
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(loaded(x), source(x))
    assert not no_network
    # A .pt state dict saved from DataParallel (module. prefix) inside {"state_dict": …} loads too.
    pt = tmp_path / "resnet50.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.net.state_dict().items()}}, pt)
    again = load_weights_file(create_model("resnet50", 1000, (0,) * 3, (1,) * 3), pt).eval()
    assert torch.equal(again(x), source(x))
    # Weights of another architecture are refused with the key that does not fit.
    small = tmp_path / "small.safetensors"
    save_file(create_model("preact_resnet_small", 1000, (0,) * 3, (1,) * 3).net.state_dict(), str(small))
    with pytest.raises(CheckpointError, match="another architecture.*set model.architecture"):
        load_weights_file(create_model("resnet50", 1000, (0,) * 3, (1,) * 3), small)


def test_vit_statistics_come_from_timm_without_building_it():
    assert input_statistics("vit_base_patch16_224", (0.1,) * 3, (0.2,) * 3) == ((0.5,) * 3, (0.5,) * 3)
    assert input_statistics("preact_resnet18", (0.1,) * 3, (0.2,) * 3) == ((0.1,) * 3, (0.2,) * 3)
    # robust-finetuning's PreAct ResNet-18 takes raw pixels (see tests/foundations/test_preact_reference.py).
    assert input_statistics("preact_resnet18_rf", (0.1,) * 3, (0.2,) * 3) == ((0.0,) * 3, (1.0,) * 3)
    assert input_statistics("robustbench:Anything", (0.1,) * 3, (0.2,) * 3) == ((0.0,) * 3, (1.0,) * 3)


def test_missing_zoo_weights_fail_at_once_with_the_path_and_no_network(tmp_path, no_network):
    expected = tmp_path / "cifar10" / "Linf" / "Carmon2019Unlabeled.pt"
    assert zoo_weights_path("Carmon2019Unlabeled", "cifar10", "Linf", tmp_path) == expected
    with pytest.raises(ZooError, match="never downloads") as error:
        load_zoo_model("Carmon2019Unlabeled", "cifar10", "Linf", model_dir=tmp_path)
    assert str(expected) in str(error.value)
    with pytest.raises(ZooError, match=str(tmp_path / "imagenet" / "Linf" / "Salman2020Do_R50.pt")):
        create_model("robustbench:Salman2020Do_R50", 1000, (0,) * 3, (1,) * 3, pretrained=True, model_dir=tmp_path)
    assert not no_network


def test_zoo_model_loads_offline_from_model_dir(tmp_path, no_network):
    torch.manual_seed(0)
    net = build_zoo_architecture("Wong2020Fast", dataset="cifar10", threat="Linf").eval()
    path = zoo_weights_path("Wong2020Fast", "cifar10", "Linf", tmp_path)
    path.parent.mkdir(parents=True)
    # RobustBench files: a state dict of tensors, often wrapped and with a DataParallel prefix.
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}}, path)
    model = load_zoo_model("Wong2020Fast", "cifar10", "Linf", model_dir=tmp_path)
    assert isinstance(model, Normalized) and not model.training
    assert model.mean.flatten().tolist() == [0, 0, 0] and model.std.flatten().tolist() == [1, 1, 1]
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), net(x))
    assert not no_network
    with pytest.raises(ZooError, match="no cifar10 Linf model 'Nobody2099'"):
        build_zoo_architecture("Nobody2099", dataset="cifar10")


def test_zoo_entries_that_would_download_fail_instead(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached: torchvision would download
    with pytest.raises(NetworkForbidden, match="never reaches the network"):
        build_zoo_architecture("Standard_R50", dataset="imagenet")
    with network_forbidden("a test"), pytest.raises(NetworkForbidden):
        socket.create_connection(("127.0.0.1", 9))


def test_pickled_code_in_a_weights_file_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            import os

            return (os.getcwd, ())

    path = tmp_path / "evil.pt"
    torch.save({"weight": Payload()}, path)
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_weights_file(create_model("preact_resnet_small", 10, (0,) * 3, (1,) * 3), path)


def test_create_model_is_the_registry_build_with_weights_on_top(tmp_path):
    """The one factory: without weights, the architecture freshly built (the same draws as the registry's
    builder); with a weights file, those weights; pretrained=True only for names with weights of their own."""
    torch.manual_seed(5)
    built = create_model("preact_resnet_small", 10, (0.3,) * 3, (0.2,) * 3, width=4)
    torch.manual_seed(5)
    created = create_model("preact_resnet_small", 10, (0.3,) * 3, (0.2,) * 3, width=4)
    assert built.state_dict().keys() == created.state_dict().keys()
    assert all(torch.equal(created.state_dict()[k], v) for k, v in built.state_dict().items())
    path = tmp_path / "w.safetensors"
    save_file(built.net.state_dict(), str(path))
    loaded = create_model("preact_resnet_small", 10, (0.3,) * 3, (0.2,) * 3, weights=path, width=4)
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in built.state_dict().items())
    with pytest.raises(ValueError, match="no pretrained weights of its own"):
        create_model("preact_resnet_small", 10, (0.3,) * 3, (0.2,) * 3, pretrained=True, width=4)
