"""Robust Weight Signatures: projection, layer selection, quantization, storage, patch / unpatch / compose."""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
import torch

from robustsoup.checkpoint import load_checkpoint, save_checkpoint
from robustsoup.config import ConfigError
from robustsoup.run_config import resolve_config
from robustsoup.rws.config import (
    check_rws_config,
    deploy_variant,
    quantized_variants,
    variant_label,
    variant_suffix,
    variants,
)
from robustsoup.rws.detector import detector_probabilities, fit_detector, route_batches, tune_lambda
from robustsoup.rws.extract import extract_signature, project_out
from robustsoup.rws.layers import plan_layers, reference_layers, residual_unit, weight_layers
from robustsoup.rws.patching import (
    apply_signatures,
    patch_checkpoint,
    patched,
    patched_state,
    state_digest,
    unpatch_checkpoint,
)
from robustsoup.rws.quantize import (
    dequantize_tensor,
    pack_codes,
    quantize,
    quantize_signatures,
    quantize_tensor,
    unpack_codes,
)
from robustsoup.rws.signature_file import load_signature, save_signature, storage_bytes
from robustsoup.rws.signatures import SignatureError, compose, rescale
from robustsoup.rws.stages import expert_selection, quantize_rws

from conftest import finetuned_like as _perturbed
from conftest import tiny_meta

IDENTITY = {
    "architecture": "preact_resnet_small",
    "model_kwargs": {"width": 4, "activation": "relu"},
    "dataset": "digits",
    "num_classes": 10,
}


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


def _signature(trio, k=5, statistics="all", corruption="fog", seed=None, rule="ours"):
    init, standard, expert = trio
    if seed is not None:
        expert = _perturbed(init, seed)
    plan = plan_layers(standard, k, True, statistics, rule)
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


def test_a_patch_inside_a_channels_last_block_computes_what_it_does_outside_and_leaves_the_model_as_it_was(trio):
    """rws_oracle_free converts the model to channels_last once a stream and patches inside that block: the patched
    model's outputs are the contiguous patched model's (to round-off), each patch is removed exactly, and after the
    block every tensor is the one it was, strides included."""
    from robustsoup.models.memory_format import computing_in

    _init, standard, _ = trio
    model = tiny_meta().build().eval()
    model.load_state_dict(standard)
    before = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    fog = _signature(trio, seed=3)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), patched(model, [fog], [0.7]):
        expected = model(x)
    with torch.no_grad(), computing_in(model, True) as net:
        plain = net(x)
        for _ in range(2):  # a second patch of the converted tensors starts from the exact unpatched weights
            with patched(model, [fog], [0.7]):
                assert all(
                    t.is_contiguous(memory_format=torch.channels_last) for t in model.parameters() if t.dim() == 4
                )
                torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)
        assert torch.equal(net(x), plain)
    assert not torch.allclose(plain, expected)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key][0]) and value.stride() == before[key][1], key


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


def test_a_truncated_signature_or_one_whose_sidecar_does_not_match_is_refused(trio, tmp_path):
    fog = save_signature(tmp_path / "fog.safetensors", _signature(trio))
    contrast = save_signature(tmp_path / "contrast.safetensors", _signature(trio, corruption="contrast", seed=3))
    every = save_signature(tmp_path / "fog-all.safetensors", _signature(trio, k=None))
    whole = fog.read_bytes()

    def sidecar(path):
        return json.loads(path.with_suffix(".json").read_text())

    def pair(weights: bytes, meta: dict):
        path = tmp_path / "pair.safetensors"
        path.write_bytes(weights)
        path.with_suffix(".json").write_text(json.dumps(meta))
        return path

    # cut short (a copy that stopped half-way): the sidecar's SHA-256 says so
    with pytest.raises(SignatureError, match="does not match its sidecar's SHA-256: truncated or replaced"):
        load_signature(pair(whole[: len(whole) // 2], sidecar(fog)))
    # …and a sidecar without a hash (hand-written, or by an older writer): the file itself is unreadable
    unhashed = {**sidecar(fog), "weights_sha256": ""}
    with pytest.raises(SignatureError, match="is unreadable"):
        load_signature(pair(whole[: len(whole) // 2], unhashed))
    assert torch.equal(
        load_signature(pair(whole, unhashed)).values["net.conv1.weight"], load_signature(fog).values["net.conv1.weight"]
    )
    # another signature's sidecar beside these weights
    with pytest.raises(SignatureError, match="SHA-256"):
        load_signature(pair(whole, sidecar(contrast)))
    # a sidecar that lists a tensor with another shape, or not every tensor of the file (no hash to catch it)
    reshaped = copy.deepcopy(unhashed)
    reshaped["tensors"]["net.conv1.weight"]["shape"] = [4, 3, 9]
    with pytest.raises(SignatureError, match=r"'net.conv1.weight' has shape \[4, 3, 3, 3\], sidecar says \[4, 3, 9\]"):
        load_signature(pair(whole, reshaped))
    with pytest.raises(SignatureError, match="lacks tensor"):
        load_signature(pair(whole, {**sidecar(every), "weights_sha256": ""}))
    with pytest.raises(SignatureError, match="holds tensors its sidecar does not list"):
        load_signature(pair(every.read_bytes(), unhashed))


def test_rws_config_cross_checks_name_the_key():
    config = resolve_config({})
    check_rws_config(config)
    for change, key in [
        ({"corruptions": ["gaussian_noise", "snowfall"]}, "rws.corruptions"),
        ({"eval_severities": [1, 3]}, "rws.eval_severities"),
        ({"deploy": "4levels"}, "rws.deploy"),
        ({"levels": [], "deploy": "16levels"}, "rws.deploy"),
        ({"compose": ["fog", "frost"]}, "rws.compose"),
        ({"transfer": {"seed": 0}}, "rws.transfer.seed"),
    ]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):  # the reader runs RWS's checks
            resolve_config({"rws": change})
    with pytest.raises(ConfigError, match=r"rws\.corruptions"):
        resolve_config({"data": {"corruptions": ["fog"]}})
    with pytest.raises(ConfigError, match=r"rws\.init\.epochs"):
        resolve_config({"rws": {"init": {"epochs": 0}}})


def test_corruption_detector_separates_feature_clusters():
    generator = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 0.0, 0.0], [3.0, 0.0, 1.0], [0.0, -3.0, 2.0]])
    labels = torch.arange(3).repeat_interleave(40)
    features = centers[labels] + 0.5 * torch.randn(120, 3, generator=generator)
    detector = fit_detector(features, labels, 3, weight_decay=1e-3, steps=50)
    # held-out points of the same clusters, drawn afresh
    held_out = centers[labels] + 0.5 * torch.randn(120, 3, generator=generator)
    probabilities = detector_probabilities(detector, held_out)
    assert (probabilities.argmax(1) == labels).float().mean() > 0.95
    assert probabilities.sum(1).sub(1).abs().max() < 1e-9


def test_oracle_free_lambda_is_the_most_accurate_and_ties_go_to_the_smaller():
    assert tune_lambda([3, 7, 5], [0.0, 0.5, 1.0]) == 0.5
    assert tune_lambda([3, 7, 7, 2], [0.0, 0.5, 1.0, 2.0]) == 0.5  # a tie: the smaller λ
    assert tune_lambda([7, 7, 7], [1.0, 2.0, 0.5]) == 0.5  # whatever the order rws.lambdas lists them in
    assert tune_lambda([4, 4], [0.0, 1.0]) == 0.0  # no patch beats an equal patch


def test_oracle_free_routes_each_batch_by_its_mean_probability():
    classes = [("none", 0), ("fog", 3), ("contrast", 3)]
    probabilities = torch.tensor(
        [
            [0.9, 0.1, 0.0],  # batch 1: clean
            [0.8, 0.1, 0.1],
            [0.7, 0.2, 0.1],
            [0.3, 0.4, 0.3],  # batch 2: two images lean to fog, one is sure of contrast: the mean says contrast
            [0.3, 0.4, 0.3],
            [0.0, 0.0, 1.0],
            [0.2, 0.7, 0.1],  # batch 3, short: one image
        ],
        dtype=torch.float64,
    )
    assert route_batches(probabilities, 3, classes) == [("none", 0), ("contrast", 3), ("fog", 3)]
    assert route_batches(probabilities[:2], 3, classes) == [("none", 0)]
    # one image per batch: each image's own argmax
    assert route_batches(probabilities, 1, classes) == [classes[i] for i in probabilities.argmax(1).tolist()]


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
    from robustsoup.config import ConfigError
    from robustsoup.distill.config import check_distill_config
    from robustsoup.run_config import resolve_config
    from robustsoup.rws.config import check_rws_config

    # rws.severities defaults to [5], which data.severities [1, 3] lacks: an error only when RWS runs.
    data = {"severities": [1, 3]}
    with pytest.raises(ConfigError, match="rws.severities"):
        resolve_config({"data": data})
    check_rws_config(resolve_config({"data": data, "rws": {"enabled": False}}))
    bad = {"student": {"training": {"epochs": 0}}}  # 0 epochs needs pretrained weights
    with pytest.raises(ConfigError, match="distill.student.training.epochs"):
        resolve_config({"distill": bad})
    check_distill_config(resolve_config({"distill": {**bad, "enabled": False}}))


# --------------------------------------------------------------------------- quantization to levels


def _experts(trio, seeds=(3, 4, 5), **kwargs):
    return [_signature(trio, seed=seed, corruption=f"c{seed}", **kwargs) for seed in seeds]


@pytest.mark.parametrize("levels", [16, 8])
def test_levels_quantization_error_is_at_most_half_a_level_per_key(trio, levels):
    experts = _experts(trio)
    quantized = quantize_signatures(experts, levels=levels, value_range="experts")
    checked = 0
    for key, kind in experts[0].kinds.items():
        if kind not in ("weight", "norm"):  # statistics stay float32
            assert all(key not in q.codes for q in quantized)
            assert torch.equal(quantized[0].values[key], experts[0].values[key].float().double())
            continue
        lo = min(float(e.values[key].min()) for e in experts)
        hi = max(float(e.values[key].max()) for e in experts)
        step = (hi - lo) / (levels - 1)
        for expert, q in zip(experts, quantized):
            codes, scale, offset = q.codes[key]
            assert (scale, offset) == (pytest.approx(step, rel=1e-12), lo)  # one grid per key for every expert
            assert codes.max() <= levels - 1
            assert float((q.values[key] - expert.values[key]).abs().max()) <= step / 2 * (1 + 1e-9)
        checked += 1
    assert checked > 10
    own = quantize_signatures(experts, levels=levels, value_range="signature")
    key = "net.conv1.weight"
    for expert, q in zip(experts, own):
        lo, hi = float(expert.values[key].min()), float(expert.values[key].max())
        assert q.codes[key][1:] == (pytest.approx((hi - lo) / (levels - 1), rel=1e-12), lo)
        assert float((q.values[key] - expert.values[key]).abs().max()) <= q.codes[key][1] / 2 * (1 + 1e-9)


def _payload_bytes(path) -> int:
    """Bytes of a safetensors file after its 8-byte length and JSON header."""
    raw = path.read_bytes()
    return len(raw) - 8 - int.from_bytes(raw[:8], "little")


@pytest.mark.parametrize(("levels", "width"), [(16, 4), (8, 3), (256, 8), (1000, 10)])
def test_packed_storage_equals_the_file_size_computation(trio, tmp_path, levels, width):
    signature = _signature(trio)
    quantized = quantize(signature, levels=levels)
    path = save_signature(tmp_path / f"fog-{levels}levels.safetensors", quantized)
    kinds = signature.kinds
    coded = [k for k, kind in kinds.items() if kind in ("weight", "norm")]
    floats = [k for k in kinds if k not in coded]
    n_codes = sum(signature.values[k].numel() for k in coded)
    expected = -(-n_codes * width // 8) + 2 * 8 * len(coded) + 4 * sum(signature.values[k].numel() for k in floats)
    assert _payload_bytes(path) == expected
    meta = load_signature(path).meta
    assert meta.file_bytes == path.stat().st_size == storage_bytes(path)
    assert meta.levels == levels and meta.bits == 32 and meta.quantization_range == "signature"
    eight_bit = save_signature(tmp_path / "fog-8bit.safetensors", quantize(signature, 8))
    assert _payload_bytes(eight_bit) == sum(v.numel() for v in signature.values.values()) + 16 * len(kinds)
    if width < 8:
        assert storage_bytes(path) < storage_bytes(eight_bit)


def test_quantized_signatures_round_trip_through_save_and_load(trio, tmp_path):
    experts = _experts(trio)
    for spec in ({"levels": 16}, {"levels": 8}, {"bits": 8}, {"bits": 3}):
        quantized = quantize_signatures(experts, value_range="experts", **spec)
        for q in quantized:
            path = save_signature(tmp_path / f"{q.name}.safetensors", q)
            loaded = load_signature(path)
            assert loaded.meta.tensors == q.meta.tensors and loaded.meta.code_levels() == q.meta.code_levels()
            assert sorted(loaded.codes) == sorted(q.codes)
            for key, value in q.values.items():
                assert torch.equal(loaded.values[key], value), key
            for key, (codes, scale, offset) in q.codes.items():
                assert np.array_equal(loaded.codes[key][0], codes) and loaded.codes[key][1:] == (scale, offset)
            again = save_signature(tmp_path / f"{q.name}-again.safetensors", loaded)
            assert _payload_bytes(again) == _payload_bytes(path)
            assert again.read_bytes()[-_payload_bytes(path) :] == path.read_bytes()[-_payload_bytes(path) :]


def test_pack_and_unpack_codes_invert_each_other():
    generator = np.random.default_rng(0)
    for width in (1, 3, 4, 7, 8, 11, 16):
        parts = [generator.integers(0, 1 << width, size=n) for n in (0, 1, 5, 64, 9)]
        stream = pack_codes(parts, width)
        assert stream.dtype == np.uint8 and stream.size == -(-sum(p.size for p in parts) * width // 8)
        for part, back in zip(parts, unpack_codes(stream, [p.size for p in parts], width)):
            assert np.array_equal(part, back)
    with pytest.raises(SignatureError, match="expected 3 uint8 bytes for 6 codes of 4 bits, found 2"):
        unpack_codes(np.zeros(2, dtype=np.uint8), [6], 4)
    with pytest.raises(SignatureError, match="cannot be packed into 3 bits"):
        pack_codes([np.array([8])], 3)


def test_bad_quantization_settings_are_rejected_with_a_clear_message(trio):
    signature = _signature(trio)
    for kwargs, message in [
        ({"levels": 1}, "from 2 to 65536"),
        ({"levels": 70000}, "from 2 to 65536"),
        ({"levels": 2.5}, "whole number of levels"),
        ({"levels": 16, "bits": 8}, "not both or neither"),
        ({}, "not both or neither"),
        ({"bits": 17}, "1–16 bits"),
        ({"levels": 16, "value_range": "global"}, "unknown quantization range 'global'"),
    ]:
        with pytest.raises(SignatureError, match=message):
            quantize_signatures([signature], **kwargs)
    quantized = quantize(signature, levels=16)
    with pytest.raises(SignatureError, match="already quantized"):
        quantize(quantized, 8)
    with pytest.raises(SignatureError, match="does not contain the tensor's values"):
        quantize_tensor(torch.tensor([0.0, 2.0]), levels=4, value_range=(0.0, 1.0))
    with pytest.raises(SignatureError, match="non-finite"):
        quantize_tensor(torch.tensor([0.0, float("nan")]), levels=4)
    with pytest.raises(ConfigError, match=r"rws\.levels"):
        resolve_config({"rws": {"levels": [1]}})
    with pytest.raises(ConfigError, match=r"rws\.levels_range"):
        resolve_config({"rws": {"levels_range": "global"}})


def test_variant_names_labels_and_deploy_follow_the_config():
    config = resolve_config({})
    assert quantized_variants(config) == {
        "16levels": {"levels": 16, "range": "experts"},
        "8levels": {"levels": 8, "range": "experts"},
        "8bit": {"bits": 8, "range": "signature"},
    }
    assert variants(config) == ["all", "shallow", "16levels", "8levels", "8bit"]
    assert deploy_variant(config) == "16levels"
    assert variant_label("16levels", 5) == "Standard + RWS (shallow 5, 16 levels (4 bit))"
    assert variant_label("8levels", 5) == "Standard + RWS (shallow 5, 8 levels (3 bit))"
    assert variant_label("8bit", 5) == "Standard + RWS (shallow 5, 8-bit codes (256 levels))"
    assert variant_suffix("16levels") == "-16levels"
    assert deploy_variant(resolve_config({"rws": {"bits": [16, 8], "deploy": "16bit"}})) == "16bit"
    for bits in (16, 32):  # the removed spelling of rws.deploy is refused by name, with what to set instead
        with pytest.raises(ConfigError, match=r"'rws\.deploy_bits' was removed; set rws\.deploy instead: <b>bit"):
            resolve_config({"rws": {"bits": [16, 8], "deploy_bits": bits}})


def test_quantize_rws_writes_every_variant_with_one_grid_over_the_experts(trio, tmp_path):
    experts = _experts(trio, seeds=(3, 4))
    config = resolve_config({"rws": {"levels": [8], "bits": [8], "deploy": "8levels"}})
    config["model"]["architecture"] = IDENTITY["architecture"]
    inputs = {e.meta.corruption: str(save_signature(tmp_path / f"{e.meta.corruption}.safetensors", e)) for e in experts}
    outputs = {v: {c: str(tmp_path / f"{c}-{v}.safetensors") for c in inputs} for v in ("8levels", "8bit")}
    written = quantize_rws(config, inputs, outputs)
    assert len(written) == 4
    levels = {c: load_signature(outputs["8levels"][c]) for c in inputs}
    bits = {c: load_signature(outputs["8bit"][c]) for c in inputs}
    key = "net.conv1.weight"
    assert levels["c3"].codes[key][1:] == levels["c4"].codes[key][1:]  # experts: one grid
    assert bits["c3"].codes[key][1:] != bits["c4"].codes[key][1:]  # signature: each its own
    assert levels["c3"].name == "rws-c3-8levels" and levels["c3"].meta.quantization_range == "experts"
    with pytest.raises(ValueError, match=r"variants \['4levels'\] are not in this config's"):
        quantize_rws(config, inputs, {"4levels": outputs["8levels"]})


# --------------------------------------------------------------------------- the reference's layer rule


def test_residual_units_are_the_stem_and_the_blocks():
    assert residual_unit("net.layers.0.conv1") == "net.layers.0"
    assert residual_unit("net.block1.layer.3.convShortcut") == "net.block1.layer.3"
    assert residual_unit("layer1.0.downsample.0") == "layer1.0"  # torchvision / timm ResNet-50
    assert residual_unit("net.conv1") == "net.conv1" and residual_unit("features.7") == "features.7"  # stem; VGG


def test_reference_rule_counts_blocks_and_replaces_batchnorm_and_shortcuts(trio):
    _, standard, _ = trio
    units = reference_layers(standard)
    assert list(units) == ["net.conv1", "net.layers.0", "net.layers.1", "net.layers.2"]  # no classifier
    assert units["net.layers.1"] == ["net.layers.1.conv1", "net.layers.1.conv2", "net.layers.1.shortcut"]
    plan = plan_layers(standard, 2, rule="reference")
    assert plan.layers == ["net.conv1", "net.layers.0"] and plan.rule == "reference"
    projected = {k for k, kind in plan.tensors.items() if kind == "weight"}
    assert projected == {"net.conv1.weight", "net.layers.0.conv1.weight", "net.layers.0.conv2.weight"}
    replaced = {k for k, kind in plan.tensors.items() if kind == "replace"}
    batchnorm = {k for k in standard if k.rpartition(".")[2] in ("weight", "bias", "running_mean", "running_var")}
    batchnorm = {k for k in batchnorm if ".bn" in k}
    assert replaced == batchnorm | {"net.layers.1.shortcut.weight", "net.layers.2.shortcut.weight"}
    assert not any("linear" in k or k.endswith("num_batches_tracked") for k in plan.tensors)
    assert plan_layers(standard, None, rule="reference").layers == list(units)
    with pytest.raises(SignatureError, match="unknown layer rule 'paper'"):
        plan_layers(standard, 2, rule="paper")


def test_reference_rule_patches_the_experts_mean_whatever_lambda(trio, tmp_path):
    init, standard, _ = trio
    a, b = _experts(trio, seeds=(3, 4), k=2, rule="reference")
    expert_a, expert_b = _perturbed(init, 3), _perturbed(init, 4)
    for coefficients in ([0.3, 0.0], [1.0, 1.0], [0.0, 0.0]):
        new = patched_state(standard, [a, b], coefficients)
        for key in ("net.bn.running_var", "net.layers.2.shortcut.weight", "net.layers.0.bn1.weight"):
            mean = ((expert_a[key].double() + expert_b[key].double()) / 2).float()
            assert torch.equal(new[key], mean), key
        key = "net.conv1.weight"
        rws = coefficients[0] * a.values[key] + coefficients[1] * b.values[key]
        assert torch.equal(new[key], (standard[key].double() + rws).float())
        assert new["net.linear.weight"] is standard["net.linear.weight"]
    one = patched_state(standard, [a], [0.5])
    assert torch.equal(one["net.bn.running_mean"], expert_a["net.bn.running_mean"])  # one expert: its own
    composed = patched_state(standard, [compose([a, b], [0.3, 0.7])], [1.0])
    together = patched_state(standard, [a, b], [0.3, 0.7])
    assert all(torch.equal(composed[k], together[k]) for k in standard)
    assert torch.equal(rescale(a, 3.0).values["net.bn.bias"], a.values["net.bn.bias"])  # not λ-scaled
    quantized = quantize(a, levels=8)
    assert all(k not in quantized.codes for k, kind in a.kinds.items() if kind == "replace")
    loaded = load_signature(save_signature(tmp_path / "a-8levels.safetensors", quantized))
    assert loaded.meta.layer_rule == "reference"
    assert torch.equal(loaded.values["net.bn.bias"], a.values["net.bn.bias"].float().double())
    model = tiny_meta().build()
    model.load_state_dict(standard)
    digest = state_digest(model.state_dict())
    with patched(model, [loaded, b], [1.0, 1.0]):
        assert state_digest(model.state_dict()) != digest
    assert state_digest(model.state_dict()) == digest


def test_block_features_and_layer_norms_under_the_reference_rule(trio):
    from dataclasses import asdict

    from robustsoup.rws.detector import ShallowFeatures
    from robustsoup.rws.report import layer_norms

    signature = _signature(trio, k=2, rule="reference")
    frame = layer_norms({"fog": json.loads(json.dumps(asdict(signature.meta)))})
    assert list(frame["layer"]) == ["net.conv1", "net.layers.0"]
    # by hand: the norm of the layer's convolution weights (a block: both convolutions; its BatchNorm
    # tensors are replaced, not added, so they are no part of the figure), over the standard model's
    _, standard, expert = trio

    def norm(tensors):
        return float(torch.cat([t.double().flatten() for t in tensors]).norm())

    for row, keys in zip(
        frame.itertuples(), (["net.conv1.weight"], ["net.layers.0.conv1.weight", "net.layers.0.conv2.weight"])
    ):
        base = norm(standard[k] for k in keys)
        assert row.relative_rws == pytest.approx(norm(signature.values[k] for k in keys) / base, rel=1e-9)
        apart = norm(expert[k] - standard[k] for k in keys) / base
        assert row.relative_expert_minus_standard == pytest.approx(apart, rel=1e-6)
    assert frame["relative_rws"].iloc[1] != frame["relative_expert_minus_standard"].iloc[1]
    model = tiny_meta().build().eval()
    features = ShallowFeatures(model, signature.meta.layers)(torch.rand(3, 3, 32, 32))
    assert features.shape == (3, 2 * (4 + 4))  # mean and std per channel of the stem and the first block


def test_patch_refuses_a_signature_of_another_standard_model_unless_allowed(trio, tmp_path, capsys):
    """Issue 14: the signature's sidecar records the standard model it was extracted against; patching
    an unrelated one is refused (the transfer table shows it does not work) unless --allow-unrelated."""
    from robustsoup.cli import main

    init, standard, expert = trio
    base = save_checkpoint(tmp_path / "standard.safetensors", standard, tiny_meta("standard"))
    sources = {"standard": {"name": "standard", "weights_sha256": load_checkpoint(base)[1].weights_sha256}}
    plan = plan_layers(standard, 5, True, "all")
    signature = extract_signature(
        init, standard, expert, plan, name="rws-fog", corruption="fog", identity=IDENTITY, sources=sources
    )
    fog = save_signature(tmp_path / "fog.safetensors", signature)
    other = save_checkpoint(tmp_path / "other.safetensors", _perturbed(init, 7), tiny_meta("other"))
    out = tmp_path / "patched.safetensors"
    assert main(["patch", str(other), "--rws", f"{fog}:1", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "extracted against standard" in err and "--allow-unrelated" in err and "rws_transfer" in err
    assert not out.exists()
    assert main(["patch", str(other), "--rws", f"{fog}:1", "-o", str(out), "--allow-unrelated"]) == 0
    assert "warning" in capsys.readouterr().err and out.exists()
    # its own standard model, and a model already patched from it, are accepted without a word
    assert main(["patch", str(base), "--rws", f"{fog}:1", "-o", str(tmp_path / "own.safetensors")]) == 0
    again = tmp_path / "twice.safetensors"
    assert main(["patch", str(tmp_path / "own.safetensors"), "--rws", f"{fog}:0.5", "-o", str(again)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_expert_selection_follows_the_key_and_needs_the_corrupted_adapt_split():
    config = resolve_config({"rws": {"enabled": True}})
    assert config["rws"]["expert_selection"] == "best"  # the reference keeps each expert's best epoch
    with pytest.raises(ValueError, match="rws.expert_selection: last"):
        expert_selection(config, "fog", None, None)
    best = expert_selection(config, "fog", "adapt.safetensors", "corrupted/adapt")
    assert best.name == f"accuracy on the adapt split corrupted by fog at severities {config['rws']['severities']}"
    # Plain data: a data-parallel training pickles it for its ranks.
    assert pickle.loads(pickle.dumps(best)).score == best.score
    config["rws"]["expert_selection"] = "last"
    assert expert_selection(config, "fog", None, None) is None
