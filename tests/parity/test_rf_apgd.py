"""Training APGD and the L1 projection against fra31/robust-finetuning's ``autopgd_train.py``.

Golden file: ``golden/robust_finetuning_apgd.npz`` (``tools/parity/gen_robust_finetuning.py``):
``apgd_train`` on :func:`parity_golden.tiny_classifier` and eight fixed 3×8×8 images, L∞/L2/L1 at
10 and 30 iterations, every point it fed the model. Tolerances (float32, per value):

- L∞: exact but for a few flips. Sign steps and clamps leave no room for round-off, except in the sign of
  a gradient coordinate that is near zero, which is the round-off's own: the kernels a CPU picks decide it.
  Measured: the goldens (made on an AMD AVX-512 CPU) hold exactly there; an AVX2 CPU (AMD, and the same
  with ``ATEN_CPU_CAPABILITY=avx2 DNNL_MAX_CPU_ISA=AVX2`` on Intel) flips 5 of 16,896 values at 10
  iterations and 28 of 47,616 at 30; an Intel AVX-512 CPU with AMX 11 of 16,896 and 25 of 47,616. So
  at most 0.1 % of the values may differ, and the robust masks and best losses below still hold. Most L∞
  coordinates sit on the ε-box, so a wrong momentum (0.74) or checkpoint spacing moves only 0.1–0.2 % of
  them too: the step logic L∞ shares with L2 is held by the L2 and L1 cases, exact to their tolerances,
  which fail under either change (measured); a wrong sign step or L∞ projection moves nearly every value.
- L1: 1e-6. The reference projects with a sort-based exact algorithm, ours by bisection (40
  halvings of λ, far below float32's resolution); both land on the same point up to float32
  round-off (measured ≤ 6.3e-7 over 30 iterations).
- L2: 1e-4. Ours scales by min(1, ε/‖δ‖), the reference by min(ε, ‖δ‖)/‖δ‖; where the loss
  saturates the unit-normalised gradient turns that round-off into up to 5.6e-5 late in a 30-step run
  (first 27 iterates ≤ 3e-7).
- The robust masks are equal. The returned best point is, for every image, one of the reference's
  iterates (within the tolerance; L∞: one of ours) with the reference's best loss (float32: 1e-5): where
  two iterates' losses tie to round-off, either is the best point.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from parity_golden import load_npz, tiny_classifier
from torch import nn
from torch.nn import functional as F

from robustsoup.attacks.apgd import apgd_train
from robustsoup.attacks.projections import project_l1

GOLDEN, META = load_npz("robust_finetuning_apgd")
TOLERANCE = {"Linf": 0.0, "L1": 1e-6, "L2": 1e-4}
LINF_FLIPS = 0.001  # the share of L∞ iterate values a near-zero gradient's sign may flip (see above)


class Recording(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("n_iter", [10, 30])
@pytest.mark.parametrize("norm", ["Linf", "L2", "L1"])
def test_training_apgd_every_iterate(norm, n_iter):
    x, y = torch.from_numpy(GOLDEN["apgd_x"]), torch.from_numpy(GOLDEN["apgd_y"])
    model = Recording(tiny_classifier()).eval()
    best, robust = apgd_train(model, x, y, norm, META["eps"][norm], n_iter=n_iter)
    ours, ref = torch.stack(model.inputs).numpy(), GOLDEN[f"{norm}_{n_iter}_iterates"]
    assert ours.shape == ref.shape == (n_iter + 1, *x.shape)  # the start point and every iterate
    if norm == "Linf":
        flipped = float((ours != ref).mean())
        assert flipped <= LINF_FLIPS, f"{flipped:.2%} of the L∞ iterate values differ from the reference's"
    else:
        np.testing.assert_allclose(ours, ref, rtol=0, atol=TOLERANCE[norm])
    np.testing.assert_array_equal(robust.numpy(), GOLDEN[f"{norm}_{n_iter}_robust"])

    ref_best = torch.from_numpy(GOLDEN[f"{norm}_{n_iter}_best"])
    with torch.no_grad():
        losses = [F.cross_entropy(model.model(p), y, reduction="none") for p in (best, ref_best)]
    np.testing.assert_allclose(losses[0].numpy(), losses[1].numpy(), rtol=0, atol=1e-5)
    iterates = ours if norm == "Linf" else ref  # L∞: ours, which are the reference's but for the flips
    gap = np.abs(iterates - best.numpy()[None]).reshape(len(ref), len(x), -1).max(axis=2).min(axis=0)
    assert gap.max() <= max(TOLERANCE[norm], 1e-6), f"best points off every reference iterate by {gap.max()}"


def test_l1_projection():
    """robustsoup's projected perturbation equals delta_u + delta_p of the reference's L1_projection.

    Six cases: inside the ball, on it, far outside, against the [0,1] box. Tolerance 1e-5: float32
    round-off of sums of up to 192 values of size ≤ 3 (measured ≤ 4.8e-6); the L1 norms agree too.
    """
    x, delta = torch.from_numpy(GOLDEN["proj_x"]), torch.from_numpy(GOLDEN["proj_delta"])
    eps, ref = GOLDEN["proj_eps"], GOLDEN["proj_delta"] + GOLDEN["proj_delta_p"]
    for i, radius in enumerate(eps):
        ours = project_l1(delta[i : i + 1], x[i : i + 1], float(radius))[0].numpy()
        np.testing.assert_allclose(ours, ref[i], rtol=0, atol=1e-5, err_msg=f"case {i}, ε={radius}")
        assert abs(np.abs(ours).sum() - np.abs(ref[i]).sum()) <= 1e-4 * max(1.0, float(radius))
        assert (x[i].numpy() + ours).min() >= 0 and (x[i].numpy() + ours).max() <= 1
