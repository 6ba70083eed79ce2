"""Robust Weight Signatures: projection, layer selection, quantization, storage, patch / unpatch / compose."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from robustsoup.checkpoint import load_checkpoint, save_checkpoint
from robustsoup.config import ConfigError, resolve_config
from robustsoup.rws.signatures import (
    SignatureError,
    apply_signatures,
    compose,
    dequantize_tensor,
    extract_signature,
    load_signature,
    patch_checkpoint,
    patched,
    patched_state,
    plan_layers,
    project_out,
    quantize,
    quantize_tensor,
    rescale,
    save_signature,
    state_digest,
    storage_bytes,
    unpatch_checkpoint,
    weight_layers,
)
from robustsoup.rws.stages import check_rws_config, detector_probabilities, fit_detector

from conftest import tiny_meta

IDENTITY = {
    "architecture": "preact_resnet_small",
    "model_kwargs": {"width": 4, "activation": "relu"},
    "dataset": "digits",
    "num_classes": 10,
}


def _perturbed(state, seed, scale=0.05):
    """A copy of ``state`` moved like a fine-tune: weights, BN affine and statistics."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not torch.is_floating_point(value):
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = value * torch.exp(scale * torch.randn(value.shape, generator=generator))
        else:
            out[key] = value + scale * torch.randn(value.shape, generator=generator)
    return out


@pytest.fixture
def trio():
    torch.manual_seed(0)
    init = tiny_meta().build().state_dict()
    for key, value in init.items():  # non-trivial statistics
        if key.endswith("running_var"):
            value.uniform_(0.5, 2.0)
        elif key.endswith("running_mean"):
            value.uniform_(-1, 1)
    return init, _perturbed(init, 1), _perturbed(init, 2)


def _signature(trio, k=5, statistics="all", corruption="fog", seed=None):
    init, standard, expert = trio
    if seed is not None:
        expert = _perturbed(init, seed)
    plan = plan_layers(standard, k, True, statistics)
    return extract_signature(
        init, standard, expert, plan, name=f"rws-{corruption}", corruption=corruption, identity=IDENTITY
    )


def test_projection_is_orthogonal_to_the_standard_direction(trio, tmp_path):
    init, standard, expert = trio
    signature = _signature(trio, k=None)
    loaded = load_signature(save_signature(tmp_path / "fog.safetensors", signature))
    checked = 0
    for key, kind in signature.kinds.items():
        if kind not in ("weight", "norm"):
            continue
        direction = (standard[key].double() - init[key].double()).flatten()
        unit = direction / direction.norm()
        delta = (expert[key].double() - init[key].double()).flatten()
        assert abs(float(signature.values[key].flatten() @ unit)) <= 1e-12 * float(delta.norm()), key
        # after the float32 round trip, orthogonal up to float32 rounding
        assert abs(float(loaded.values[key].flatten() @ unit)) <= 1e-6 * float(delta.norm()), key
        # and what was removed is exactly the component along the standard direction
        removed = delta - signature.values[key].flatten()
        assert torch.allclose(removed, (delta @ unit) * unit, atol=1e-12)
        checked += 1
    assert checked > 10


def test_project_out_keeps_a_delta_when_the_standard_model_did_not_move():
    delta = torch.randn(3, 4)
    assert torch.equal(project_out(delta, torch.zeros(3, 4)), delta.double())


def test_layer_selection_takes_the_first_k_weight_layers_with_biases_and_norms(trio):
    _, standard, _ = trio
    layers = weight_layers(standard)
    assert layers[0] == "net.conv1" and layers[-1] == "net.linear" and len(layers) == 10
    plan = plan_layers(standard, 5, True, "selected")
    assert plan.layers == layers[:5]
    assert "net.layers.1.conv2.weight" in plan.tensors and "net.layers.1.shortcut.weight" not in plan.tensors
    assert plan.tensors["net.layers.0.bn1.weight"] == "norm"
    assert plan.tensors["net.layers.0.bn1.running_var"] == "logvar"
    assert "net.bn.running_mean" not in plan.tensors and "net.linear.bias" not in plan.tensors
    assert not any(k.endswith("num_batches_tracked") for k in plan.tensors)
    everything = plan_layers(standard, None, True, "all")
    assert everything.layers == layers and everything.tensors["net.linear.bias"] == "weight"
    assert everything.tensors["net.bn.running_mean"] == "mean"
    bare = plan_layers(standard, 5, False, "none")
    assert set(bare.tensors.values()) == {"weight"}
    stats_everywhere = plan_layers(standard, 1, False, "all")
    assert stats_everywhere.tensors["net.bn.running_var"] == "logvar"
    assert plan_layers(standard, 50).layers == layers
    with pytest.raises(SignatureError, match="statistics"):
        plan_layers(standard, 5, True, "some")
    with pytest.raises(SignatureError, match="no weight layer"):
        plan_layers({"bn.weight": torch.ones(3)}, 5)


@pytest.mark.parametrize("bits", [2, 8, 16])
def test_quantization_error_is_at_most_half_a_level(bits):
    x = torch.randn(257, dtype=torch.float64) * 3
    codes, scale, offset = quantize_tensor(x, bits)
    assert codes.dtype == (np.uint8 if bits <= 8 else np.uint16)
    assert codes.max() <= (1 << bits) - 1 and offset == float(x.min())
    assert scale == pytest.approx((float(x.max()) - float(x.min())) / ((1 << bits) - 1))
    error = (dequantize_tensor(codes, scale, offset) - x).abs().max()
    assert float(error) <= scale / 2 * (1 + 1e-9)
    constant, s0, o0 = quantize_tensor(torch.full((4,), 0.25), bits)
    assert s0 == 0 and torch.equal(dequantize_tensor(constant, s0, o0), torch.full((4,), 0.25, dtype=torch.float64))


def test_quantized_signature_round_trips_and_respects_the_bound(trio, tmp_path):
    signature = _signature(trio)
    path = save_signature(tmp_path / "fog.safetensors", signature)
    float_values = load_signature(path).values
    for bits in (16, 8):
        quantized = quantize(load_signature(path), bits)
        loaded = load_signature(save_signature(tmp_path / f"fog-{bits}bit.safetensors", quantized))
        assert loaded.meta.bits == bits and loaded.meta.tensors == signature.meta.tensors
        for key, value in float_values.items():
            _, scale, _ = loaded.codes[key]
            assert float((loaded.values[key] - value).abs().max()) <= scale / 2 * (1 + 1e-9) + 1e-300, key
            assert torch.equal(loaded.values[key], quantized.values[key]), key
        with pytest.raises(SignatureError, match="already quantized"):
            quantize(loaded, 4)


def test_storage_is_accounted_from_the_files(trio, tmp_path):
    _init, standard, _ = trio
    signature = _signature(trio)
    path = save_signature(tmp_path / "fog.safetensors", signature)
    q8 = save_signature(tmp_path / "fog-8bit.safetensors", quantize(signature, 8))
    q16 = save_signature(tmp_path / "fog-16bit.safetensors", quantize(signature, 16))
    for p in (path, q8, q16):
        meta = load_signature(p).meta
        assert meta.file_bytes == p.stat().st_size == storage_bytes(p)
        assert storage_bytes(p, sidecar=True) == p.stat().st_size + p.with_suffix(".json").stat().st_size
    params = signature.meta.parameters
    assert params == sum(v.numel() for v in signature.values.values())
    header = 8 * 2 * len(signature.values) + 4096  # scale/offset vectors and the JSON header
    assert 4 * params <= path.stat().st_size <= 4 * params + 4096
    assert params <= q8.stat().st_size <= params + header
    assert 2 * params <= q16.stat().st_size <= 2 * params + header
    checkpoint = save_checkpoint(tmp_path / "standard.safetensors", standard, tiny_meta("standard"))
    assert storage_bytes(q8) < storage_bytes(path) < storage_bytes(checkpoint)


def test_unpatch_restores_the_standard_model_bit_for_bit(trio):
    _init, standard, _ = trio
    model = tiny_meta().build()
    model.load_state_dict(standard)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    digest = state_digest(reference)
    fog, contrast = _signature(trio, seed=3), _signature(trio, seed=4, corruption="contrast")
    patch = apply_signatures(model, [fog, contrast], [0.7, 1.3])
    changed = [k for k in fog.values if not torch.equal(model.state_dict()[k], reference[k])]
    assert len(changed) == len(fog.values)
    patch.remove()
    assert state_digest(model.state_dict()) == digest
    for key, value in model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    with patched(model, [fog], [3.0]):
        pass
    assert state_digest(model.state_dict()) == digest
    # the functional form never touches its input
    before = state_digest(standard)
    new = patched_state(standard, [fog], [0.5])
    assert state_digest(standard) == before and state_digest(new) != before
    assert new["net.linear.weight"] is standard["net.linear.weight"]  # untouched tensors are shared


def test_statistics_are_patched_to_the_expert_and_stay_positive(trio):
    _init, standard, expert = trio
    signature = _signature(trio, k=1, statistics="all")
    at_one = patched_state(standard, [signature], [1.0])
    key = "net.layers.2.bn2.running_var"
    assert torch.allclose(at_one[key], expert[key], rtol=1e-6)
    assert torch.allclose(at_one["net.bn.running_mean"], expert["net.bn.running_mean"], atol=1e-6)
    for coefficient in (-20.0, 20.0):
        assert (patched_state(standard, [signature], [coefficient])[key] > 0).all()


def test_composition_equals_patching_with_several_and_sequentially(trio):
    _, standard, _ = trio
    fog, contrast = _signature(trio, seed=3), _signature(trio, k=None, seed=4, corruption="contrast")
    together = patched_state(standard, [fog, contrast], [0.8, 1.1])
    composed = patched_state(standard, [compose([fog, contrast], [0.8, 1.1])], [1.0])
    for key in standard:
        assert torch.equal(together[key], composed[key]), key
    sequential = patched_state(patched_state(standard, [fog], [0.8]), [contrast], [1.1])
    for key in standard:
        torch.testing.assert_close(sequential[key], together[key], rtol=1e-6, atol=1e-6)
    scaled = patched_state(standard, [rescale(fog, 2.0)], [0.4])
    direct = patched_state(standard, [fog], [0.8])
    for key in fog.values:
        torch.testing.assert_close(scaled[key], direct[key], rtol=1e-6, atol=1e-7)
    # λ is applied once, not squared (the reference code's slip)
    key = "net.conv1.weight"
    expected = (standard[key].double() + 0.5 * fog.values[key]).float()
    assert torch.equal(patched_state(standard, [fog], [0.5])[key], expected)


def test_signatures_of_another_architecture_fail_clearly(trio, tmp_path):
    signature = _signature(trio)
    torch.manual_seed(0)
    wider = tiny_meta(width=8).build().state_dict()
    with pytest.raises(SignatureError, match=r"shape .* another architecture"):
        patched_state(wider, [signature], [1.0])
    other_layers = {k.replace("net.", "backbone."): v for k, v in trio[1].items()}
    with pytest.raises(SignatureError, match="has no tensor 'net.conv1.weight'"):
        patched_state(other_layers, [signature], [1.0])
    with pytest.raises(SignatureError, match="does not fit a wrn28_10"):
        patched_state(
            trio[1], [signature], [1.0], identity={"architecture": "wrn28_10", "model_kwargs": {"width": 160}}
        )
    path = save_signature(tmp_path / "fog.safetensors", signature)
    with pytest.raises(SignatureError, match="expected architecture"):
        load_signature(path, expect={"architecture": "resnet50"})
    path.write_bytes(path.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(SignatureError, match="SHA-256"):
        load_signature(path)
    other = copy.deepcopy(signature)
    other.meta.model_kwargs = {"width": 8, "activation": "relu"}
    with pytest.raises(SignatureError, match="is for a"):
        compose([signature, other], [1.0, 1.0])


def test_patch_and_unpatch_checkpoints_exactly(trio, tmp_path):
    _, standard, _ = trio
    base = save_checkpoint(tmp_path / "standard.safetensors", standard, tiny_meta("standard"))
    fog = save_signature(tmp_path / "fog.safetensors", _signature(trio, seed=3))
    contrast = save_signature(
        tmp_path / "contrast-8bit.safetensors", quantize(_signature(trio, seed=4, corruption="contrast"), 8)
    )
    out = patch_checkpoint(base, [(fog, 0.8), (contrast, 1.0)], tmp_path / "patched.safetensors")
    state, meta = load_checkpoint(out)
    assert meta.provenance["rws_patch"]["base"] == "standard"
    assert [s["coefficient"] for s in meta.provenance["rws_patch"]["signatures"]] == [0.8, 1.0]
    assert not torch.equal(state["net.conv1.weight"], standard["net.conv1.weight"])
    restored = unpatch_checkpoint(out, tmp_path / "restored.safetensors")
    state, meta = load_checkpoint(restored)
    assert meta.name == "standard" and "rws_patch" not in meta.provenance
    assert state_digest(state) == state_digest(standard)  # every tensor bit for bit
    (tmp_path / "patched.unpatch.safetensors").unlink()
    with pytest.raises(SignatureError, match="unpatch exactly"):
        unpatch_checkpoint(out, tmp_path / "again.safetensors")


def test_rws_config_cross_checks_name_the_key():
    config = resolve_config({})
    check_rws_config(config)
    for change, key in [
        ({"corruptions": ["gaussian_noise", "snowfall"]}, "rws.corruptions"),
        ({"eval_severities": [1, 3]}, "rws.eval_severities"),
        ({"deploy_bits": 4}, "rws.deploy_bits"),
        ({"compose": ["fog", "frost"]}, "rws.compose"),
        ({"transfer": {"seed": 0}}, "rws.transfer.seed"),
    ]:
        bad = resolve_config({"rws": change})
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            check_rws_config(bad)
    with pytest.raises(ConfigError, match=r"rws\.corruptions"):
        check_rws_config(resolve_config({"data": {"corruptions": ["fog"]}}))
    with pytest.raises(ConfigError, match=r"rws\.init\.epochs"):
        resolve_config({"rws": {"init": {"epochs": 0}}})


def test_corruption_detector_separates_feature_clusters():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 1.0], [0.0, -3.0, 2.0]])
    labels = torch.arange(3).repeat_interleave(40)
    features = centers[labels] + 0.5 * torch.randn(120, 3, generator=generator)
    detector = fit_detector(features, labels, 3, weight_decay=1e-3, steps=50)
    accuracy = (detector_probabilities(detector, features).argmax(1) == labels).float().mean()
    assert accuracy > 0.95


def test_patch_and_unpatch_commands(trio, tmp_path, capsys):
    from robustsoup.cli import main

    _, standard, _ = trio
    base = save_checkpoint(tmp_path / "standard.safetensors", standard, tiny_meta("standard"))
    fog = save_signature(tmp_path / "fog.safetensors", _signature(trio, seed=3))
    out = tmp_path / "patched.safetensors"
    assert main(["patch", str(base), "--rws", f"{fog}:0.8", "--rws", f"{fog}:0.2", "-o", str(out)]) == 0
    assert main(["unpatch", str(out), "-o", str(tmp_path / "back.safetensors")]) == 0
    assert state_digest(load_checkpoint(tmp_path / "back.safetensors")[0]) == state_digest(standard)
    torch.manual_seed(0)
    wide = save_checkpoint(tmp_path / "wide.safetensors", tiny_meta(width=8).build().state_dict(), tiny_meta("wide", 8))
    assert main(["patch", str(wide), "--rws", f"{fog}:1", "-o", str(tmp_path / "bad.safetensors")]) == 2
    assert "does not fit" in capsys.readouterr().err


def test_a_disabled_section_is_not_cross_checked():
    from robustsoup.config import ConfigError, resolve_config
    from robustsoup.distill.config import check_distill_config
    from robustsoup.rws.config import check_rws_config

    # rws.severities defaults to [5], which data.severities [1, 3] lacks: an error only when RWS runs.
    data = {"severities": [1, 3]}
    with pytest.raises(ConfigError, match="rws.severities"):
        check_rws_config(resolve_config({"data": data}))
    check_rws_config(resolve_config({"data": data, "rws": {"enabled": False}}))
    bad = {"student": {"training": {"epochs": 0}}}  # 0 epochs needs pretrained weights
    with pytest.raises(ConfigError, match="distill.student.training.epochs"):
        check_distill_config(resolve_config({"distill": bad}))
    check_distill_config(resolve_config({"distill": {**bad, "enabled": False}}))
