"""Golden outputs of VITA-Group/Robust_Weight_Signatures: ``linear_quant`` and ``model_patching.decompose``.

Usage: ``python tools/parity/gen_rws.py CHECKOUT [--commit SHA]``. Writes
``tests/parity/golden/rws_patching.npz``:

- ``quant_x`` (1000 fixed values) and ``linear_quant(quant_x, n, min, max, clamp=False)`` with the
  tensor's own min/max (as ``decompose`` calls it) at 16 and 8 levels (``quant_16``, ``quant_8``);
- for the reference's VGG-16 (CIFAR-10) and ResNet-50 (Tiny-ImageNet, 200 classes) state-dict key
  layouts, shrunk (every tensor replaced by a small one of the same number of dimensions, values from
  :func:`parity_golden.formula_tensor`; ``<arch>/keys`` and ``<arch>/shapes`` record them): an
  initialization, a standard model and two experts, and ``decompose``'s patched state dict
  (``<arch>/<case>/<key>``) at ``keep_num`` 7 for the cases ``one`` (one expert, ``--alpha 1``),
  ``two`` (both, ``--alpha 1``: weight 1/2 each), ``alpha`` (both, ``--finetune_alpha 0.7 0.4``),
  ``one_q16`` / ``one_q8`` and ``two_q16`` / ``two_q8`` (``--quantization 16/8 --quantization_type linear``).

Shims, applied at run time here (the checkout is not modified): ``advertorch`` is a stub whose
``utils.NormalizeByChannelMeanStd`` is a module with advertorch's two buffers ``mean`` and ``std``
(the models build one, so their state dicts hold ``normalize.mean``/``normalize.std``); ``seaborn``
(imported by ``tools.py``, unused here) is an empty stub;
``torch.Tensor.cuda`` returns the tensor (CPU only); ``decompose`` reads the architecture from the
script's global ``args``, set here to a namespace with ``arch``.
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "parity"))
from golden_io import GOLDEN_DIR, add_checkout_to_path, checkout_arguments, provenance, save_npz  # noqa: E402
from parity_golden import rws_states  # noqa: E402

REPOSITORY = "VITA-Group/Robust_Weight_Signatures"
ARCHS = {"vgg16": 10, "resnet50": 200}
KEEP = 7
CASES = {  # name: (experts, weight rule, quantization)
    "one": (1, ("alpha", 1.0), None),
    "two": (2, ("alpha", 1.0), None),
    "alpha": (2, ("finetune", [0.7, 0.4]), None),
    "one_q16": (1, ("alpha", 1.0), 16),
    "one_q8": (1, ("alpha", 1.0), 8),
    "two_q16": (2, ("alpha", 1.0), 16),
    "two_q8": (2, ("alpha", 1.0), 8),
}


def _normalize_class():
    import torch

    class NormalizeByChannelMeanStd(torch.nn.Module):
        """advertorch's module as far as a state dict sees it: buffers ``mean`` and ``std``."""

        def __init__(self, mean, std):
            super().__init__()
            self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
            self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

        def forward(self, x):
            return (x - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    return NormalizeByChannelMeanStd


def _install_shims() -> None:
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    _Normalize = _normalize_class()
    advertorch = types.ModuleType("advertorch")
    advertorch.utils = types.ModuleType("advertorch.utils")
    advertorch.utils.NormalizeByChannelMeanStd = _Normalize
    sys.modules["advertorch"], sys.modules["advertorch.utils"] = advertorch, advertorch.utils
    sys.modules.setdefault("seaborn", types.ModuleType("seaborn"))


def shrink(shape: tuple[int, ...]) -> tuple[int, ...]:
    return {4: (4, 3, 2, 2), 2: (5, 4), 1: (4,), 0: ()}[len(shape)]


def main() -> None:
    checkout, commit = checkout_arguments(__doc__.splitlines()[0], "VITA-Group/Robust_Weight_Signatures")
    add_checkout_to_path(checkout)
    _install_shims()
    import torch

    torch.set_num_threads(1)
    import model_patching
    import tools
    from quantize_utils.func import linear_quant

    arrays: dict[str, np.ndarray] = {}
    x = torch.from_numpy(np.random.RandomState(31).standard_t(3, 1000).astype(np.float32) * 0.01)
    arrays["quant_x"] = x.numpy()
    for n in (16, 8):
        arrays[f"quant_{n}"] = linear_quant(x, n, min=x.min().item(), max=x.max().item(), clamp=False).numpy()

    for arch, classes in ARCHS.items():
        full = tools.get_model(arch, pretrained=False, num_classes=classes).state_dict()
        keys = list(full)
        shapes = [shrink(tuple(v.shape)) for v in full.values()]
        arrays[f"{arch}/keys"] = np.array(keys)
        arrays[f"{arch}/shapes"] = np.array([list(s) + [0] * (4 - len(s)) + [len(s)] for s in shapes])
        init, standard, experts = rws_states(keys, shapes, [full[k].is_floating_point() for k in keys])
        model_patching.args = types.SimpleNamespace(arch=arch)
        for case, (count, (rule, value), quantization) in CASES.items():
            if rule == "alpha":
                weight = value * torch.ones(count) / count
            else:
                weight = torch.tensor(value)
            patched = model_patching.decompose(
                experts[:count], init, standard, standard, weight=weight, only_backbone=True, keep_num=KEEP,
                quantization=quantization, quantization_method="linear",
            )  # fmt: skip
            for key, tensor in patched.items():
                arrays[f"{arch}/{case}/{key}"] = tensor.numpy()
    meta = provenance(REPOSITORY, commit, __file__) | {
        "files": ["model_patching.py", "tools.py", "quantize_utils/func.py"],
        "keep_num": KEEP,
        "cases": {k: {"experts": c, "weights": list(w) if isinstance(w, tuple) else w, "quantization": q}
                  for k, (c, w, q) in CASES.items()},
    }  # fmt: skip
    save_npz(GOLDEN_DIR / "rws_patching.npz", arrays, meta)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
