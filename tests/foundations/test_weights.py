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


def test_soup_running_variances_are_plain_weighted_sums_floored_only_where_not_positive():
    """model-soups' rule: Σ wᵢ vᵢ wherever it is positive, even below every ingredient's variance
    (an extrapolation such as (1.2, −0.2)); only channels where it would be ≤ 0 take the smallest
    variance of the ingredients with non-zero weight."""
    a, b = _models(2)
    key = "net.bn.running_var"
    channels = a[key].numel()
    a[key].copy_(torch.linspace(0.5, 1.5, channels))
    b[key].copy_(torch.linspace(1.5, 4.0, channels))
    plain = 1.2 * a[key].double() - 0.2 * b[key].double()
    assert (plain < torch.minimum(a[key], b[key]).double()).all()  # every channel below both ingredients
    soup = affine_combination([a, b], [1.2, -0.2])[key]
    assert torch.allclose(soup.double(), plain, atol=1e-6), "positive variances must stay the plain sum"
    # a channel that extrapolation drives to ≤ 0 is floored at the ingredients' minimum, the others not
    a[key].fill_(0.1)
    b[key].fill_(2.0)
    b[key][0] = 0.2  # channel 0: 1.5·0.1 − 0.5·0.2 = 0.05 > 0, kept; the rest 0.15 − 1.0 < 0, floored
    extrapolated = affine_combination([a, b], [1.5, -0.5])[key]
    assert extrapolated[0].item() == pytest.approx(0.05, abs=1e-6)
    assert torch.allclose(extrapolated[1:], torch.full_like(extrapolated[1:], 0.1))
    inside = affine_combination([a, b], [0.5, 0.5])[key]
    assert torch.allclose(inside[1:], torch.full_like(inside[1:], 1.05))


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
    """θ_parent + Σ λᵢ τᵢ over fine-tunes of one parent is the soup with weights (1 − Σλᵢ, λ₁, …): task vectors
    summed as partial deltas (as RWS composes signatures) and added to the parent give the mixer's soup."""
    from robustsoup.weights import apply_delta, scale, sparse_combination, subtract, task_vector

    parent, a, b = _models(3)
    soup = affine_combination([parent, a, b], [0.2, 0.5, 0.3])
    floating = [k for k, v in parent.items() if torch.is_floating_point(v)]
    vectors = [task_vector(m, parent, floating) for m in (a, b)]
    arithmetic = apply_delta(parent, sparse_combination(vectors, [0.5, 0.3]))
    assert set(arithmetic) == set(floating)
    for key in floating:
        assert torch.allclose(soup[key], arithmetic[key], atol=1e-6), key
    key = "net.conv1.weight"
    assert torch.allclose(apply_delta(a, subtract(b, a, [key]))[key], b[key], atol=1e-7)
    assert torch.equal(scale(a, 2.0)["net.bn.num_batches_tracked"], a["net.bn.num_batches_tracked"])
    assert all(v.abs().max() == 0 for v in task_vector(a, a, floating).values())
    # linearity: a soup of soups is the soup of the combined weights
    inner = affine_combination([a, b], [0.25, 0.75])
    outer = affine_combination([parent, inner], [0.5, 0.5])
    flat = affine_combination([parent, a, b], [0.5, 0.125, 0.375])
    assert torch.allclose(outer[key], flat[key], atol=1e-6)


def test_sparse_combination_sums_each_key_over_the_parts_that_hold_it():
    from robustsoup.weights import sparse_combination

    a, b, c = _models(3)
    first = {"net.conv1.weight": a["net.conv1.weight"], "net.bn.bias": a["net.bn.bias"]}
    second = {"net.conv1.weight": b["net.conv1.weight"]}
    third = {"net.linear.bias": c["net.linear.bias"]}
    total = sparse_combination([first, second, third], [0.5, -2.0, 3.0])
    assert set(total) == {"net.conv1.weight", "net.bn.bias", "net.linear.bias"}
    assert all(v.dtype == torch.float64 for v in total.values())
    key = "net.conv1.weight"
    assert torch.equal(total[key], 0.5 * a[key].double() + -2.0 * b[key].double())
    assert torch.equal(total["net.bn.bias"], 0.5 * a["net.bn.bias"].double())
    assert torch.equal(total["net.linear.bias"], 3.0 * c["net.linear.bias"].double())
    # one part with weight 1 comes back exactly (no 0 + x)
    assert torch.equal(sparse_combination([first], [1.0])[key], a[key].double())
    mean = sparse_combination([first, second, third], [1.0, 1.0, 1.0], mean=True)
    assert torch.allclose(mean[key], (a[key].double() + b[key].double()) / 2)
    assert torch.equal(mean["net.bn.bias"], a["net.bn.bias"].double())  # held by one part only
    with pytest.raises(WeightMismatchError, match=r"key 'net.conv1.weight': part 1 has shape \(3,\)"):
        sparse_combination([first, {key: torch.zeros(3)}], [1.0, 1.0])
    with pytest.raises(ValueError, match="2 partial state dicts but 1 weights"):
        sparse_combination([first, second], [1.0])
    with pytest.raises(ValueError, match="sum to 0"):
        sparse_combination([first, second], [1.0, -1.0], mean=True)


def test_apply_delta_changes_only_the_delta_keys_and_casts_back():
    from robustsoup.weights import apply_delta

    (a,) = _models(1)
    half = {k: v.half() if torch.is_floating_point(v) else v for k, v in a.items()}
    delta = {"net.conv1.weight": torch.full_like(a["net.conv1.weight"], 0.25, dtype=torch.float64)}
    delta["net.bn.running_var"] = torch.full_like(a["net.bn.running_var"], -5.0, dtype=torch.float64)
    out = apply_delta(half, delta, log_scale={"net.bn.running_var"})
    assert set(out) == set(delta)
    assert out["net.conv1.weight"].dtype == torch.float16
    assert torch.equal(out["net.conv1.weight"], (half["net.conv1.weight"].double() + 0.25).half())
    expected = (half["net.bn.running_var"].double() * torch.exp(torch.tensor(-5.0, dtype=torch.float64))).half()
    assert torch.equal(out["net.bn.running_var"], expected) and (out["net.bn.running_var"] > 0).all()
    with pytest.raises(WeightMismatchError, match="the delta has it, the model does not"):
        apply_delta(a, {"net.nothing.weight": torch.zeros(1)})
    with pytest.raises(WeightMismatchError, match=r"key 'net.bn.bias': the model has \(16,\)"):
        apply_delta(a, {"net.bn.bias": torch.zeros(5)})
    with pytest.raises(WeightMismatchError, match="expected a floating tensor"):
        apply_delta(a, {"net.bn.num_batches_tracked": torch.zeros(())})


def test_task_vectors_over_a_subset_of_keys_in_float64():
    from robustsoup.weights import check_compatible, task_vector

    a, b = _models(2)
    keys = ["net.conv1.weight", "net.bn.running_var"]
    vector = task_vector(a, b, keys, torch.float64)
    assert list(vector) == keys and all(v.dtype == torch.float64 for v in vector.values())
    assert torch.equal(vector["net.conv1.weight"], a["net.conv1.weight"].double() - b["net.conv1.weight"].double())
    partial = {k: b[k] for k in keys}
    check_compatible([a, partial], keys=keys)  # other keys may differ
    with pytest.raises(WeightMismatchError, match="key 'net.linear.bias': partial does not have it"):
        check_compatible([a, partial], ["full", "partial"], keys=[*keys, "net.linear.bias"])
    with pytest.raises(WeightMismatchError, match="model 0 has it, model 1 does not"):
        check_compatible([a, partial])  # without keys, every key must match
