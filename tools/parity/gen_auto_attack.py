"""Golden AutoAttack results of fra31/auto-attack, run as fra31/robust-finetuning's eval.py runs it.

Usage: ``python tools/parity/gen_auto_attack.py CHECKOUT [--commit SHA]``. Writes
``tests/parity/golden/auto_attack_standard.npz``: on :func:`parity_golden.tiny_classifier` and 32
fixed 3×8×8 images (``x``, ``y``: the clean predictions, every eighth label changed so that some
points start misclassified), ``AutoAttack(model, norm, eps, version='standard')`` with
``attacks_to_run = ['apgd-ce', 'apgd-t']`` (robust-finetuning ``eval.py:23-25``) for L∞, L2 and L1,
``run_standard_evaluation(x, y, bs=1000)``: per point, whether the model still classifies the
returned point correctly (``robust_<norm>``), and the returned points (``x_adv_<norm>``).

Arguments and shims (the checkout is not modified): ``seed=0`` (eval.py passes none, so AutoAttack
seeds with the time; robustsoup seeds every attack with the config's seed, see the fidelity ledger)
and ``device='cpu'`` (the default is ``'cuda'``); ``verbose=False``. No other shim is needed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "parity"))
from golden_io import GOLDEN_DIR, add_checkout_to_path, checkout_arguments, provenance, save_npz  # noqa: E402
from parity_golden import tiny_classifier  # noqa: E402

REPOSITORY = "fra31/auto-attack"
EPS = {"Linf": 0.03, "L2": 0.25, "L1": 1.5}
N_POINTS = 32


def main() -> None:
    checkout, commit = checkout_arguments(__doc__.splitlines()[0], "fra31/auto-attack")
    add_checkout_to_path(checkout)
    import torch

    torch.set_num_threads(1)
    from autoattack import AutoAttack

    model = tiny_classifier()
    x = torch.from_numpy(np.random.RandomState(21).uniform(0, 1, (N_POINTS, 3, 8, 8)).astype(np.float32))
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::8] = (y[::8] + 1) % 10
    arrays = {"x": x.numpy(), "y": y.numpy()}
    for norm, eps in EPS.items():
        adversary = AutoAttack(model, norm=norm, eps=eps, version="standard", seed=0, device="cpu", verbose=False)
        adversary.attacks_to_run = ["apgd-ce", "apgd-t"]
        with torch.no_grad():
            x_adv = adversary.run_standard_evaluation(x, y, bs=1000)
            arrays[f"robust_{norm}"] = (model(x_adv).argmax(1) == y).numpy()
        arrays[f"x_adv_{norm}"] = x_adv.numpy()
        print(norm, "robust", arrays[f"robust_{norm}"].mean())
    meta = provenance(REPOSITORY, commit, __file__) | {
        "files": ["autoattack/autoattack.py", "autoattack/autopgd_base.py"],
        "eps": EPS,
        "as_run_by": "fra31/robust-finetuning eval.py:23-25 (attacks_to_run = ['apgd-ce', 'apgd-t'])",
        "seed": 0,
    }
    save_npz(GOLDEN_DIR / "auto_attack_standard.npz", arrays, meta)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
