import pytest
import torch

from robustsoup.weights import WeightMismatchError, affine_combination

from conftest import tiny_meta


def _models(n):
    states = []
    for seed in range(n):
        torch.manual_seed(seed)
        model = tiny_meta().build()
        for module in model.modules():  # make BN statistics differ between models
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
                module.num_batches_tracked.fill_(10 * (seed + 1))
        states.append(model.state_dict())
    return states


def test_one_hot_weights_return_that_model_bit_for_bit():
    states = _models(3)
    soup = affine_combination(states, [0, 1, 0])
    for key in states[1]:
        if torch.is_floating_point(states[1][key]):
            assert torch.equal(soup[key], states[1][key]), key


def test_affine_combination_mixes_floats_and_carries_integer_buffers():
    a, b = _models(2)
    soup = affine_combination([a, b], [0.25, 0.75])
    key = "net.conv1.weight"
    assert torch.allclose(soup[key], 0.25 * a[key] + 0.75 * b[key], atol=1e-7)
    bn = "net.bn.running_mean"
    assert torch.allclose(soup[bn], 0.25 * a[bn] + 0.75 * b[bn], atol=1e-7)
    assert torch.equal(soup["net.bn.num_batches_tracked"], a["net.bn.num_batches_tracked"])


def test_extrapolated_running_variance_is_floored_at_the_ingredients_minimum():
    a, b = _models(2)
    a["net.bn.running_var"].fill_(0.1)
    b["net.bn.running_var"].fill_(2.0)
    extrapolated = affine_combination([a, b], [1.5, -0.5])
    assert torch.allclose(extrapolated["net.bn.running_var"], torch.full_like(a["net.bn.running_var"], 0.1))
    inside = affine_combination([a, b], [0.5, 0.5])
    assert torch.allclose(inside["net.bn.running_var"], torch.full_like(a["net.bn.running_var"], 1.05))


def test_mismatch_names_the_first_offending_key():
    a = _models(1)[0]
    torch.manual_seed(0)
    wide = tiny_meta(width=8).build().state_dict()
    with pytest.raises(
        WeightMismatchError, match=r"key 'net.conv1.weight': a has \(4, 3, 3, 3\).*b has \(8, 3, 3, 3\)"
    ):
        affine_combination([a, wide], [0.5, 0.5], names=["a", "b"])
    fewer = dict(a)
    fewer.pop("net.linear.bias")
    with pytest.raises(WeightMismatchError, match="key 'net.linear.bias': a has it, b does not"):
        affine_combination([a, fewer], [0.5, 0.5], names=["a", "b"])
    with pytest.raises(ValueError, match="2 state dicts but 3 weights"):
        affine_combination([a, a], [1, 0, 0])


def test_task_vectors_and_soups_are_the_same_algebra():
    from robustsoup.weights import add, apply_task_vectors, layer_norms, scale, subtract, task_vector

    parent, a, b = _models(3)
    soup = affine_combination([parent, a, b], [0.2, 0.5, 0.3])
    arithmetic = apply_task_vectors(parent, [task_vector(a, parent), task_vector(b, parent)], [0.5, 0.3])
    for key in soup:
        if torch.is_floating_point(soup[key]):
            assert torch.allclose(soup[key], arithmetic[key], atol=1e-6), key
    key = "net.conv1.weight"
    assert torch.allclose(add(a, subtract(b, a))[key], b[key], atol=1e-7)
    assert torch.equal(scale(a, 2.0)["net.bn.num_batches_tracked"], a["net.bn.num_batches_tracked"])
    norms = layer_norms(task_vector(a, a))
    assert set(norms) == {k for k, v in a.items() if torch.is_floating_point(v)}
    assert max(norms.values()) == 0.0
    # linearity: a soup of soups is the soup of the combined weights
    inner = affine_combination([a, b], [0.25, 0.75])
    outer = affine_combination([parent, inner], [0.5, 0.5])
    flat = affine_combination([parent, a, b], [0.5, 0.125, 0.375])
    assert torch.allclose(outer[key], flat[key], atol=1e-6)
