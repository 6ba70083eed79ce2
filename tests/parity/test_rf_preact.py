"""``preact_resnet18_rf`` against fra31/robust-finetuning's ``PreActResNet18(activation='softplus1')``.

Golden file: ``golden/robust_finetuning_preact.npz`` (``tools/parity/gen_robust_finetuning.py``). The
state dict is the ``ep_1.pth`` the reference's train.py saved after a one-epoch fine-tune at
learning rate 0 from :func:`parity_golden.formula_state` weights: the weights are the formula's, the
BatchNorm buffers (stored in the golden file) those of two training batches. The test writes that
state dict with ``torch.save`` as train.py does and loads it through robustsoup's weights-file path.

Tolerance: float32 round-off of the same convolutions (ours and the reference call the same torch
operations in the same order; a different CPU or thread count may pick another convolution
algorithm): logits and running statistics rtol 1e-5 / atol 1e-5, input gradients atol 1e-6
(their values are ~1e-3).
"""

from __future__ import annotations

import numpy as np
import torch
from parity_golden import formula_state, load_npz
from torch.nn import functional as F

from robustsoup.models import create_model
from robustsoup.models.registry import IDENTITY_STATISTICS
from robustsoup.models.zoo import load_weights_file

GOLDEN, META = load_npz("robust_finetuning_preact")


def _saved_state(tmp_path):
    keys = [str(k) for k in GOLDEN["keys"]]
    shapes = create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS).net.state_dict()
    floating = [(k, tuple(shapes[k].shape)) for k in keys if shapes[k].is_floating_point()]
    state = {k: torch.from_numpy(v) for k, v in formula_state(floating).items()}
    state |= {k[len("state/") :]: torch.from_numpy(v) for k, v in GOLDEN.items() if k.startswith("state/")}
    path = tmp_path / "ep_1.pth"
    torch.save({k: state[k] for k in keys}, path)  # train.py: torch.save(model.state_dict(), …/ep_<n>.pth)
    return path


def test_keys_of_the_saved_state_dict_are_ours():
    ours = list(create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS).net.state_dict())
    assert ours == [str(k) for k in GOLDEN["keys"]]


def test_logits_gradients_and_running_statistics(tmp_path):
    model = create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS)
    load_weights_file(model, _saved_state(tmp_path))
    x, y = torch.from_numpy(GOLDEN["x"]), torch.from_numpy(GOLDEN["y"])
    model.eval()
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xg)
    np.testing.assert_allclose(logits.detach().numpy(), GOLDEN["eval_logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad.numpy(), GOLDEN["input_grad"], rtol=1e-4, atol=1e-6)
    model.train()
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), GOLDEN["train_logits"], rtol=1e-5, atol=1e-5)
    after = {k: v for k, v in model.net.state_dict().items() if "running" in k}
    assert len(after) == sum(k.startswith("after_train/") for k in GOLDEN)
    for key, value in after.items():
        np.testing.assert_allclose(value.numpy(), GOLDEN[f"after_train/{key}"], rtol=1e-5, atol=1e-5, err_msg=key)
