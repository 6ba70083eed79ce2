"""Robust Weight Signatures against VITA-Group/Robust_Weight_Signatures: quantization, patching, λ.

Golden file: ``golden/rws_patching.npz`` (``tools/parity/gen_rws.py``): ``linear_quant`` at 16 and 8
levels, and ``model_patching.decompose`` (``keep_num`` 7) on shrunk state dicts with the key layouts of
the reference's VGG-16 and ResNet-50. robustsoup's side: ``plan_layers(rule='reference', k=7)``,
``extract_signature`` per expert, ``quantize_signatures(levels=L, value_range='experts')``,
``patched_state``.

The λ rule: the reference multiplies each expert's Δ by its weight wᵢ before projecting and the
projected vector by wᵢ again, so it patches with wᵢ² (``--alpha α`` over n experts: wᵢ = α/n).
robustsoup applies λ once; it reproduces the reference with λᵢ = wᵢ², directly and through
``compose`` (the ledger row "RWS: λ applied once").

Tolerance: the reference computes in float32, robustsoup in float64 then casts: 1e-6 absolute on values
of size ≤ 2 (float32 round-off; measured below that). Quantized patches are compared the same way: the
same codes on both sides (the grid is the same up to round-off).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity_golden import load_npz, rws_states

from robustsoup.rws.extract import extract_signature
from robustsoup.rws.layers import plan_layers
from robustsoup.rws.patching import patched_state
from robustsoup.rws.quantize import dequantize_tensor, quantize_signatures, quantize_tensor
from robustsoup.rws.signatures import compose

GOLDEN, META = load_npz("rws_patching")
IDENTITY = {"architecture": "reference-layout", "model_kwargs": {}, "dataset": "cifar10", "num_classes": 10}
ATOL = 1e-6


@pytest.mark.parametrize("levels", [16, 8])
def test_linear_quant_levels(levels):
    x = torch.from_numpy(GOLDEN["quant_x"])
    codes, scale, offset = quantize_tensor(x, levels=levels)
    ours = dequantize_tensor(codes, scale, offset).float().numpy()
    expected = GOLDEN[f"quant_{levels}"]
    assert len(np.unique(expected)) <= levels and len(np.unique(codes)) == len(np.unique(expected))
    np.testing.assert_allclose(ours, expected, rtol=0, atol=ATOL * np.abs(expected).max())


def _states(arch: str):
    keys = [str(k) for k in GOLDEN[f"{arch}/keys"]]
    shapes = [tuple(int(d) for d in row[: row[-1]]) for row in GOLDEN[f"{arch}/shapes"]]
    floating = [not k.endswith("num_batches_tracked") for k in keys]
    return rws_states(keys, shapes, floating)


def _signatures(arch: str, count: int, levels: int | None):
    init, standard, experts = _states(arch)
    plan = plan_layers(standard, k=META["keep_num"], rule="reference")
    signatures = [
        extract_signature(init, standard, e, plan, name=f"e{i}", corruption=None, identity=IDENTITY)
        for i, e in enumerate(experts[:count])
    ]
    if levels:
        signatures = quantize_signatures(signatures, levels=levels, value_range="experts")
    return standard, signatures


def _reference_weights(case: str) -> list[float]:
    spec = META["cases"][case]
    rule, value = spec["weights"]
    return [value / spec["experts"]] * spec["experts"] if rule == "alpha" else list(value)


def _assert_equal_to_reference(arch: str, case: str, ours: dict) -> None:
    prefix = f"{arch}/{case}/"
    expected = {k[len(prefix) :]: v for k, v in GOLDEN.items() if k.startswith(prefix)}
    assert sorted(expected) == sorted(ours)
    for key, value in expected.items():
        np.testing.assert_allclose(ours[key].numpy(), value, rtol=0, atol=ATOL, err_msg=f"{arch} {case} {key}")


@pytest.mark.parametrize("case", ["one", "two", "alpha", "one_q16", "one_q8", "two_q16", "two_q8"])
@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
def test_model_patching_with_lambda_squared(arch, case):
    spec = META["cases"][case]
    standard, signatures = _signatures(arch, spec["experts"], spec["quantization"])
    lambdas = [w * w for w in _reference_weights(case)]
    _assert_equal_to_reference(arch, case, patched_state(standard, signatures, lambdas))


@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
def test_composition_rule(arch):
    """One signature composed as Σ wᵢ² RWSᵢ and patched at λ = 1 is the reference's two-expert patch."""
    standard, signatures = _signatures(arch, 2, None)
    composed = compose(signatures, [w * w for w in _reference_weights("alpha")])
    _assert_equal_to_reference(arch, "alpha", patched_state(standard, [composed], [1.0]))


@pytest.mark.parametrize("arch", ["vgg16", "resnet50"])
def test_which_tensors_the_reference_touches(arch):
    """The golden patch changes exactly the tensors our reference plan names (projected or replaced)."""
    standard, signatures = _signatures(arch, 1, None)
    changed = {k for k, v in standard.items() if not np.array_equal(v.numpy(), GOLDEN[f"{arch}/one/{k}"])}
    assert changed == set(signatures[0].meta.tensors)
