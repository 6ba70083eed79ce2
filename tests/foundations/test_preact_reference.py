"""robust-finetuning's PreAct ResNet-18 (``preact_resnet18_rf``) and loading the authors' checkpoints.

The authors' network is rebuilt here from its published structure (fra31/robust-finetuning,
``model_zoo/fast_models.py``: ``PreActResNet18(n_cls, activation='softplus1')``), independently of
robustsoup's code and with their module names; its state dict is saved as they save it and loaded
through robustsoup's weights loader.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from robustsoup.checkpoint import CheckpointError
from robustsoup.models import ZooError, create_model, input_statistics, load_weights_file
from robustsoup.models.multihead import split_base
from robustsoup.run_config import load_config_file, resolve_config
from robustsoup.train.run import initial_model, model_identity, new_meta

from conftest import REPO

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


class AuthorsBlock(nn.Module):
    """Their pre-activation block: softplus(β=1) after each BN, shortcut (``shortcut.0``) from the activated input."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, kernel_size=3, stride=1, padding=1, bias=False)
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = F.softplus(self.bn1(x), beta=1)
        skip = self.shortcut(a) if hasattr(self, "shortcut") else x
        h = self.conv2(F.softplus(self.bn2(self.conv1(a)), beta=1))
        return h + skip


class AuthorsPreActResNet18(nn.Module):
    """Their PreAct ResNet-18: no input normalization, ReLU after the last BN, 4×4 average pooling."""

    def __init__(self, n_cls: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        cin = 64
        for i, (cout, stride) in enumerate(((64, 1), (128, 2), (256, 2), (512, 2)), start=1):
            self.add_module(f"layer{i}", nn.Sequential(AuthorsBlock(cin, cout, stride), AuthorsBlock(cout, cout, 1)))
            cin = cout
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, n_cls)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        h = F.avg_pool2d(F.relu(self.bn(h)), 4)
        return self.linear(h.view(h.size(0), -1))


def _keys(n_blocks=(2, 2, 2, 2)) -> set[str]:
    """The authors' state-dict keys, written out from their structure."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    keys = {"conv1.weight", "linear.weight", "linear.bias", *(f"bn.{b}" for b in bn)}
    for stage, n in enumerate(n_blocks, start=1):
        for block in range(n):
            p = f"layer{stage}.{block}."
            keys |= {p + "conv1.weight", p + "conv2.weight", *(p + f"bn{i}.{b}" for i in (1, 2) for b in bn)}
        if stage > 1:
            keys.add(f"layer{stage}.0.shortcut.0.weight")
    return keys


@pytest.fixture(scope="module")
def authors_model() -> AuthorsPreActResNet18:
    """The authors' network with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(0)
    net = AuthorsPreActResNet18(10)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 2.0)
                module.num_batches_tracked.fill_(7)
    return net.eval()


@pytest.fixture(scope="module")
def authors_file(authors_model, tmp_path_factory):
    """Their published format: ``torch.save(model.state_dict(), 'pretr_Linf.pth')``."""
    path = tmp_path_factory.mktemp("rf") / "pretr_Linf.pth"
    torch.save(authors_model.state_dict(), path)
    return path


def test_the_reference_variant_has_the_authors_keys_and_statistics(authors_model):
    ours = create_model("preact_resnet18_rf", 10, CIFAR_MEAN, CIFAR_STD, width=64, activation="softplus")
    assert set(authors_model.state_dict()) == _keys()
    assert set(ours.net.state_dict()) == _keys()
    assert [(k, v.shape) for k, v in ours.net.state_dict().items()] == [
        (k, v.shape) for k, v in authors_model.state_dict().items()
    ]
    # No input normalization whatever the data set's statistics are.
    assert input_statistics("preact_resnet18_rf", CIFAR_MEAN, CIFAR_STD) == ((0.0,) * 3, (1.0,) * 3)
    assert ours.mean.flatten().tolist() == [0, 0, 0] and ours.std.flatten().tolist() == [1, 1, 1]
    assert isinstance(ours.net.act, nn.ReLU) and isinstance(ours.net.layer1[0].act, nn.Softplus)
    # Our own PreAct ResNet-18 keeps its layout, final activation and the data set's statistics.
    old = create_model("preact_resnet18", 10, CIFAR_MEAN, CIFAR_STD, width=64, activation="softplus")
    assert "layers.0.bn1.weight" in old.net.state_dict() and isinstance(old.net.act, nn.Softplus)
    assert old.mean.flatten().tolist() == pytest.approx(CIFAR_MEAN)


@pytest.mark.parametrize("wrapping", ["bare", "train.py --save_optim", "DataParallel"])
def test_the_authors_checkpoint_loads_with_identical_logits(authors_model, tmp_path, wrapping):
    state = authors_model.state_dict()
    path = tmp_path / "ep_3.pth"
    if wrapping == "bare":
        obj = state
    elif wrapping == "train.py --save_optim":
        optimizer = torch.optim.SGD(authors_model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        obj = {"state_dict": state, "optim": optimizer.state_dict()}
    else:
        obj = {f"module.{k}": v for k, v in state.items()}
    torch.save(obj, path)
    model = create_model(
        "preact_resnet18_rf", 10, CIFAR_MEAN, CIFAR_STD, weights=path, width=64, activation="softplus"
    ).eval()
    torch.manual_seed(1)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        expected, found = authors_model(x), model(x)
    assert torch.equal(found, expected)
    # Training mode (batch statistics) computes the same too.
    model.train(), authors_model.train()
    try:
        with torch.no_grad():
            assert torch.allclose(model(x), authors_model(x), rtol=0, atol=1e-6)
    finally:
        authors_model.eval()


def test_a_parent_starts_from_the_authors_file_through_the_config(authors_model, authors_file):
    preset = load_config_file(REPO / "config" / "presets" / "cifar10.yaml")
    assert preset["model"]["architecture"] == "preact_resnet18_rf" and preset["model"]["activation"] == "softplus"
    config = resolve_config({**preset, "model": {**preset["model"], "weights": str(authors_file)}})
    meta = new_meta(model_identity(config), "linf")
    assert meta.mean == [0.0, 0.0, 0.0] and meta.std == [1.0, 1.0, 1.0]
    model = initial_model(config, meta).eval()
    assert meta.provenance["initial_weights"] == str(authors_file)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), authors_model(x))
    # A checkpoint of this architecture rebuilds from its sidecar with the same keys.
    assert set(meta.build().net.state_dict()) == _keys()


def test_a_missing_file_names_the_path_and_what_to_do(tmp_path):
    missing = tmp_path / "pretr_L2.pth"
    with pytest.raises(ZooError, match="never downloads") as error:
        create_model("preact_resnet18_rf", 10, CIFAR_MEAN, CIFAR_STD, weights=missing)
    assert str(missing) in str(error.value) and "model.weights" in str(error.value)


def test_files_of_another_layout_say_which_architecture_fits(authors_file, tmp_path):
    # The authors' file into our own PreAct ResNet-18: their keys are unexpected, ours missing.
    with pytest.raises(CheckpointError, match="set model.architecture: preact_resnet18_rf") as error:
        create_model("preact_resnet18", 10, CIFAR_MEAN, CIFAR_STD, weights=authors_file)
    assert "missing keys ['layers.0.bn1.weight'" in str(error.value)
    assert "unexpected keys ['layer1.0.bn1.weight'" in str(error.value)
    with pytest.raises(CheckpointError, match="set model.architecture: preact_resnet18_rf"):
        create_model("wrn28_10", 10, CIFAR_MEAN, CIFAR_STD, weights=authors_file, width=16)
    # A state dict in our layout into the reference variant.
    ours = tmp_path / "ours.pth"
    torch.save(create_model("preact_resnet18", 10, CIFAR_MEAN, CIFAR_STD).net.state_dict(), ours)
    with pytest.raises(CheckpointError, match=r"missing keys \['layer1\.0\.bn1\.weight'.*this file is not one"):
        create_model("preact_resnet18_rf", 10, CIFAR_MEAN, CIFAR_STD, weights=ours)


def test_shape_mismatch_says_the_expected_and_found_width(authors_file):
    with pytest.raises(CheckpointError, match=r"has shape \(64, 3, 3, 3\), the model expects \(16, 3, 3, 3\)") as e:
        create_model("preact_resnet18_rf", 10, CIFAR_MEAN, CIFAR_STD, weights=authors_file, width=16)
    assert "the file's network has width 64 and 10 classes, the model built here width 16 and 10 classes" in str(
        e.value
    )
    with pytest.raises(CheckpointError, match="width 64 and 100 classes"):
        load_weights_file(create_model("preact_resnet18_rf", 100, CIFAR_MEAN, CIFAR_STD), authors_file)


def test_multihead_splits_the_reference_layout_into_its_blocks():
    net = create_model("preact_resnet18_rf", 10, CIFAR_MEAN, CIFAR_STD, width=8).net
    classifier, blocks, post = split_base(net)
    assert (classifier, post) == ("linear", ["bn"])
    assert blocks == [f"layer{s}.{b}" for s in range(1, 5) for b in range(2)]
    flat = create_model("preact_resnet_small", 10, CIFAR_MEAN, CIFAR_STD, width=8).net
    assert split_base(flat)[1] == ["layers.0", "layers.1", "layers.2"]


def test_one_identity_for_the_run_model_and_a_distillation_spec():
    """model_identity of a study's spec (distill.student) is the run's model's identity function applied to it."""
    config = resolve_config({"model": {"architecture": "preact_resnet_small", "width": 8, "activation": "relu"}})
    assert model_identity(config) == {
        "architecture": "preact_resnet_small",
        "dataset": "digits",
        "model_kwargs": {"width": 8, "activation": "relu"},
    }
    student = config["distill"]["student"]
    assert model_identity(config, student)["model_kwargs"] == {
        "width": student["width"],
        "activation": student["activation"],
    }
    zoo = {"architecture": "robustbench:Wong2020Fast", "width": 16, "activation": "relu"}
    assert model_identity(config, zoo)["model_kwargs"] == {"width": 16, "activation": "relu"}  # no zoo_threat key
    zoo_model = dict(config["model"], architecture="robustbench:Wong2020Fast", zoo_threat="Linf")
    assert model_identity(config, zoo_model)["model_kwargs"] == {"dataset": config["dataset"], "threat": "Linf"}
