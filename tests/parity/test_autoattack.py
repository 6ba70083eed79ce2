"""AutoAttack's standard evaluation against fra31/auto-attack, as fra31/robust-finetuning's eval.py runs it.

Golden file: ``golden/auto_attack_standard.npz`` (``tools/parity/gen_auto_attack.py``):
``AutoAttack(version='standard')`` with ``attacks_to_run = ['apgd-ce', 'apgd-t']`` and seed 0 on
:func:`parity_golden.tiny_classifier` and 32 fixed points, per norm. robustsoup's
:func:`robust_correct` under ``attack_plan('standard', …)`` (through pyautoattack) must give the same
robust/non-robust verdict for every point: exact, no tolerance (the same seeded runs on the same points).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity_golden import load_npz, tiny_classifier

from robustsoup.attacks.autoattack import attack_plan, robust_correct

GOLDEN, META = load_npz("auto_attack_standard")


@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
def test_standard_autoattack_robust_per_point(norm):
    x, y = torch.from_numpy(GOLDEN["x"]), torch.from_numpy(GOLDEN["y"])
    assert len(x) == 32
    plan = attack_plan("standard", norm, num_classes=10)
    ours = robust_correct(tiny_classifier(), x, y, norm, META["eps"][norm], plan, seed=META["seed"], batch_size=1000)
    expected = GOLDEN[f"robust_{norm}"]
    assert 0 < expected.sum() < len(expected)  # some points fall, some hold
    np.testing.assert_array_equal(ours.numpy(), expected)
