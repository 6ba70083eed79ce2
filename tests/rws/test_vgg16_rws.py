"""The RWS reference's VGG-16 (Table 4 on CIFAR-10): its layout, its layer rule, per-signature quantization."""

from __future__ import annotations

import pytest
import torch

from robustsoup.models import create_model
from robustsoup.rws.extract import extract_signature
from robustsoup.rws.layers import plan_layers
from robustsoup.rws.quantize import quantize_signatures

CIFAR10 = ((0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616))


def _reference_keys() -> dict[str, tuple[int, ...]]:
    """The reference's state dict without its normalize.* buffers, derived independently of our module:
    torchvision's VGG-16 (configuration D) feature extractor without its last max-pool has the same
    positions, and the reference's classifier is one Linear(512, classes)."""
    from torchvision.models import vgg16

    features = vgg16(weights=None).features[:-1]  # the reference drops the last pool
    keys = {f"features.{k}": tuple(v.shape) for k, v in features.state_dict().items()}
    keys["classifier.weight"] = (10, 512)
    keys["classifier.bias"] = (10,)
    return keys


def test_vgg16_builds_with_the_reference_state_dict_layout_and_normalizes_with_the_data_set():
    model = create_model("vgg16_rws", 10, *CIFAR10, width=64)
    own = {k: tuple(v.shape) for k, v in model.net.state_dict().items()}
    assert own == _reference_keys()
    assert list(model.state_dict()) == [f"net.{k}" for k in own]  # normalization is not in the state dict
    assert torch.allclose(model.mean.flatten(), torch.tensor(CIFAR10[0]))
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == 0
    x = torch.rand(2, 3, 32, 32)
    assert model(x).shape == (2, 10)
    with pytest.raises(ValueError, match="ReLU"):
        create_model("vgg16_rws", 10, *CIFAR10, activation="softplus")


def test_the_reference_layer_rule_on_vgg16_takes_the_first_k_convolutions_with_their_biases():
    """select_layers (tools.py:210-217): the first k 4-D weights, each with its bias; the classifier never."""
    state = create_model("vgg16_rws", 10, *CIFAR10, width=8).state_dict()
    convs = [k[: -len(".weight")] for k, v in state.items() if v.dim() == 4]
    for k in (5, 7, 13, 20):
        plan = plan_layers(state, k=k, rule="reference")
        expected = [f"{c}.{leaf}" for c in convs[:k] for leaf in ("weight", "bias")]
        assert list(plan.tensors) == expected and set(plan.tensors.values()) == {"weight"}


def _signatures():
    torch.manual_seed(0)
    init = create_model("vgg16_rws", 10, *CIFAR10, width=8).state_dict()
    identity = {"architecture": "vgg16_rws", "model_kwargs": {"width": 8}, "dataset": "cifar10", "num_classes": 10}

    def moved(scale: float):
        return {k: v + scale * torch.randn_like(v) for k, v in init.items()}

    standard = moved(0.01)
    plan = plan_layers(init, k=5, rule="reference")
    return [
        extract_signature(init, standard, moved(scale), plan, name=name, corruption=name, identity=identity)
        for name, scale in (("fog", 0.02), ("contrast", 0.2))
    ]


def test_per_signature_quantization_range_is_the_reference_one_expert_per_call():
    """The authors patch one corruption per model_patching.py call, so [min, max] is that signature's:
    quantizing fog alone or beside a much larger contrast signature gives the same tensors under
    value_range signature, and not under experts (one grid over both)."""
    fog, contrast = _signatures()
    alone = quantize_signatures([fog], levels=16, value_range="signature")[0]
    beside = quantize_signatures([fog, contrast], levels=16, value_range="signature")[0]
    pooled = quantize_signatures([fog, contrast], levels=16, value_range="experts")[0]
    key = next(k for k, kind in fog.kinds.items() if kind == "weight")
    assert torch.equal(alone.values[key], beside.values[key])
    assert not torch.equal(alone.values[key], pooled.values[key])
    lo, hi = float(fog.values[key].min()), float(fog.values[key].max())
    assert alone.codes[key][1:] == (pytest.approx((hi - lo) / 15, rel=1e-12), lo)
    assert pooled.codes[key][2] < lo  # the pooled grid starts at contrast's far smaller minimum
