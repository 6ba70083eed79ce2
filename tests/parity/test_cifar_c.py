"""CIFAR-10-C parity: robustsoup's 19 corruptions against hendrycks/robustness's make_cifar_c.py.

Golden file: ``golden/hendrycks_robustness_cifar_c.npz`` (``tools/parity/gen_hendrycks_robustness.py``),
the reference's uint8 output on four fixed 32×32 images at severities 1, 3 and 5, motion_blur and
snow through ImageMagick (Wand) as the reference runs them. Tolerance: none, every value equal.
Deterministic corruptions go through the public :func:`corrupt`; random ones are fed the
reference's own draws (:class:`parity_golden.LegacyDraws` on the seed the generator set before
each image; impulse_noise the ``default_rng(seed)`` the generator handed scikit-image).
"""

from __future__ import annotations

import numpy as np
import pytest
from parity_golden import LegacyDraws, load_npz

from robustsoup.data import corruption_ops
from robustsoup.data.corruptions import CONSTANTS, CORRUPTIONS, corrupt

GOLDEN, META = load_npz("hendrycks_robustness_cifar_c")
CASES = [(name, severity) for name in META["corruptions"] for severity in META["severities"]]


def test_golden_covers_every_corruption_at_severities_1_3_5():
    assert META["reference"] == "hendrycks/robustness" and len(META["commit"]) == 40
    assert sorted(META["corruptions"]) == sorted(CORRUPTIONS)
    assert META["severities"] == [1, 3, 5]
    assert GOLDEN["images"].shape == (4, 32, 32, 3)


def _draws(name: str, severity: int) -> list:
    seeds = GOLDEN["seeds"][META["corruptions"].index(name), severity]
    if name == "impulse_noise":
        return [np.random.default_rng(int(seed)) for seed in seeds]
    return [LegacyDraws(int(seed)) for seed in seeds]


@pytest.mark.parametrize(("name", "severity"), CASES)
def test_corruption_equals_the_reference(name, severity):
    images, expected = GOLDEN["images"], GOLDEN[f"{name}_s{severity}"]
    if name in corruption_ops.RANDOM_OPS:
        constants = CONSTANTS["cifar"][name][severity - 1]
        ours = corruption_ops.OPS[name](images, constants, _draws(name, severity))
    else:
        ours = corrupt(images, name, severity, constants="cifar")
    assert ours.dtype == np.uint8 and ours.shape == expected.shape
    diff = np.abs(ours.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() == 0, f"{name} s{severity}: {np.mean(diff > 0):.1%} of values differ, by up to {diff.max()}"
