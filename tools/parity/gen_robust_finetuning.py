"""Golden outputs of fra31/robust-finetuning: training APGD, its L1 projection, train.py's optimisation, the network.

Usage: ``python tools/parity/gen_robust_finetuning.py CHECKOUT [--commit SHA]``. Writes three files
to ``tests/parity/golden/``:

- ``robust_finetuning_apgd.npz``: ``autopgd_train.apgd_train`` (no random start, cross-entropy) on
  :func:`parity_golden.tiny_classifier` and eight fixed 3×8×8 images, for L∞, L2 and L1 at 10 and
  30 iterations: every point the attack feeds the model (``<norm>_<n>_iterates``: the start and
  each iterate), the returned best points and robust mask; and ``L1_projection`` on fixed
  perturbations (inside and outside the ball, pushing against the box).
- ``robust_finetuning_train.json``: two real runs of ``train.py``'s ``main()`` on a tiny fixed
  loader (8 batches of 2 CIFAR-sized images): (a) from scratch, ``--attack apgd --l_norms 'Linf L2
  L1' --at_iter 2 --epochs 3 --lr-max 0.05``: the learning rate of every batch, the weight-decay
  groups (parameter names, decay), and for every batch the state of the norm statistics and the
  weights passed to ``random.choices``; (b) fine-tuning (``--finetune_model``) from a formula state
  dict: the optimizer's groups.
- ``robust_finetuning_preact.npz``: run (b) again with ``--lr-max 0`` for one epoch, so the
  ``ep_1.pth`` that train.py saves holds the formula weights and the running statistics of two
  training batches; from that file: its keys in order, every buffer, and the reference network's
  eval and train-mode logits, cross-entropy input gradients (eval mode) and running statistics
  after one train-mode forward, on four fixed 32×32 images.

Shims, applied at run time here (the checkout is not modified):

- ``torch.Tensor.cuda`` and ``torch.nn.Module.cuda`` return their object unchanged (CPU only);
- ``robustbench`` (imported by train.py, eval.py) is a stub whose ``utils.clean_accuracy`` counts
  correct argmax predictions; ``autoattack`` (imported by eval.py, unused by train.py) is an empty stub;
- ``data.load_cifar10_train`` and ``data.load_cifar10`` return the fixed tensors above instead of
  downloading CIFAR-10;
- ``utils.get_lr_schedule``, ``random.choices``, ``torch.optim.SGD``, ``apgd_train`` and the model
  constructor are wrapped to record their arguments and results (each calls the original);
- the run's files are written under a temporary directory (``--save_dir``, and the working directory
  for ``./models/pretr_parity.pth``, which holds the formula state dict).
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import types
from contextlib import chdir
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests" / "parity"))
from golden_io import GOLDEN_DIR, add_checkout_to_path, checkout_arguments, provenance, save_json, save_npz  # noqa: E402
from parity_golden import formula_state, tiny_classifier  # noqa: E402

REPOSITORY = "fra31/robust-finetuning"
APGD_EPS = {"Linf": 0.06, "L2": 0.6, "L1": 3.0}
APGD_ITERS = (10, 30)
BATCHES, BATCH = 8, 2


def _install_shims() -> None:
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    robustbench = types.ModuleType("robustbench")
    robustbench.utils = types.SimpleNamespace(
        clean_accuracy=lambda model, x, y, **kwargs: float((model(x).argmax(1) == y).float().mean()),
        load_model=None,
    )
    sys.modules["robustbench"] = robustbench
    sys.modules["autoattack"] = types.ModuleType("autoattack")


def unit_images(n: int, shape: tuple[int, ...], seed: int):
    import torch

    return torch.from_numpy(np.random.RandomState(seed).uniform(0, 1, (n, *shape)).astype(np.float32))


class Recorder:
    """Wraps a model and keeps every input it is called on."""

    def __init__(self, model) -> None:
        self.model, self.inputs = model, []
        self.training = model.training

    def __call__(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def apgd_goldens(autopgd) -> dict[str, np.ndarray]:
    import torch

    model = tiny_classifier()
    x = unit_images(8, (3, 8, 8), 7)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[::4] = (y[::4] + 1) % 10  # two points misclassified from the start
    arrays = {"apgd_x": x.numpy(), "apgd_y": y.numpy()}
    for norm, eps in APGD_EPS.items():
        for n_iter in APGD_ITERS:
            recorder = Recorder(model)
            x_best, acc, _, _ = autopgd.apgd_train(recorder, x, y, norm=norm, eps=eps, n_iter=n_iter)
            arrays[f"{norm}_{n_iter}_iterates"] = torch.stack(recorder.inputs).numpy()
            arrays[f"{norm}_{n_iter}_best"] = x_best.numpy()
            arrays[f"{norm}_{n_iter}_robust"] = acc.numpy()
    # L1_projection: x, the perturbation delta_u and eps; the reference returns delta_p (x + delta_u + delta_p)
    rng = np.random.RandomState(11)
    px = torch.from_numpy(rng.uniform(0, 1, (6, 3, 8, 8)).astype(np.float32))
    sparse = rng.uniform(0, 1, (6, 3, 8, 8)) < 0.1
    du = torch.from_numpy((rng.normal(0, 1, (6, 3, 8, 8)) * np.where(sparse, 3.0, 0.05)).astype(np.float32))
    du[0] *= 0.01  # well inside the ball
    peps = torch.tensor([3.0, 3.0, 1.0, 0.5, 6.0, 12.0])
    dp = torch.stack([autopgd.L1_projection(px[i : i + 1], du[i : i + 1], float(peps[i]))[0] for i in range(6)])
    arrays |= {"proj_x": px.numpy(), "proj_delta": du.numpy(), "proj_eps": peps.numpy(), "proj_delta_p": dp.numpy()}
    return arrays


def loader_tensors():
    x = unit_images(BATCHES * BATCH, (3, 32, 32), 5)
    y = np.random.RandomState(6).randint(0, 10, BATCHES * BATCH)
    import torch

    y = torch.from_numpy(y)
    return [(x[i : i + BATCH], y[i : i + BATCH]) for i in range(0, len(x), BATCH)]


def run_train(train, data, utils, argv: list[str], work: Path) -> dict:
    """Run train.py's main() with ``argv``; return what the wrappers recorded."""
    import torch

    record: dict = {"lr": [], "draws": [], "groups": None, "apgd": []}
    batches = loader_tensors()
    data.load_cifar10_train = lambda args, only_train=False: (batches, None)
    data.load_cifar10 = lambda n, data_dir=None, training_set=False, device=None: (batches[0][0], batches[0][1])

    make_schedule = utils.get_lr_schedule

    def recorded_schedule(args):
        schedule = make_schedule(args)

        def lr(t):
            value = schedule(t)
            record["lr"].append({"t": t, "lr": value})
            return value

        return lr

    train.utils.get_lr_schedule = recorded_schedule
    models = []
    make_model = train.PreActResNet18

    def recorded_model(*args, **kwargs):
        models.append(make_model(*args, **kwargs))
        return models[-1]

    train.PreActResNet18 = recorded_model
    load_pretrained = utils.load_pretrained_models

    def recorded_pretrained(name):
        models.append(load_pretrained(name))
        return models[-1]

    utils.load_pretrained_models = recorded_pretrained
    sgd = torch.optim.SGD

    def recorded_sgd(params, **kwargs):
        params = list(params)
        names = {id(p): n for n, p in models[-1].named_parameters()}
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        record["groups"] = [
            {
                "names": [names[id(p)] for p in g["params"]],
                "weight_decay": g.get("weight_decay", kwargs["weight_decay"]),
            }
            for g in groups
        ]
        return sgd(params, **kwargs)

    train.optim.SGD = recorded_sgd
    apgd = train.apgd_train

    def recorded_apgd(model, x, y, norm, eps, n_iter):
        out = apgd(model, x, y, norm=norm, eps=eps, n_iter=n_iter)
        record["apgd"].append({"norm": norm, "robust": int(out[1].sum()), "n": int(x.shape[0])})
        return out

    train.apgd_train = recorded_apgd
    choices = random.choices

    def recorded_choices(population, weights=None, **kwargs):
        picked = choices(population, weights=weights, **kwargs)
        record["draws"].append({"weights": [float(w) for w in weights], "picked": int(picked[0])})
        return picked

    train.random.choices = recorded_choices
    work.mkdir(parents=True, exist_ok=True)
    sys.argv = ["train.py", "--save_dir", str(work / "runs"), "--data_dir", str(work), *argv]
    try:
        with chdir(work):
            train.main()
    finally:
        train.random.choices = choices
        train.optim.SGD = sgd
        train.PreActResNet18 = make_model
        utils.load_pretrained_models = load_pretrained
        train.utils.get_lr_schedule = make_schedule
    record["model"] = models[-1]
    record["saved"] = sorted((work / "runs").rglob("ep_*.pth"))
    return record


def formula_pretrained(model_factory, work: Path) -> None:
    import torch

    model = model_factory(10, activation="softplus1")
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items() if v.is_floating_point()]
    state = {k: torch.from_numpy(v) for k, v in formula_state(shapes).items()}
    state |= {k: v for k, v in model.state_dict().items() if not v.is_floating_point()}
    (work / "models").mkdir(parents=True, exist_ok=True)
    torch.save(state, work / "models" / "pretr_parity.pth")


def preact_goldens(model_factory, saved: Path) -> dict[str, np.ndarray]:
    import torch
    import torch.nn.functional as F

    state = torch.load(saved, map_location="cpu")
    arrays = {f"state/{k}": v.numpy() for k, v in state.items() if "running" in k or "num_batches" in k}
    model = model_factory(10, activation="softplus1")
    model.load_state_dict(state)
    x = unit_images(4, (3, 32, 32), 9)
    y = torch.tensor([0, 3, 5, 9])
    model.eval()
    xg = x.clone().requires_grad_(True)
    logits = model(xg)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits, y, reduction="sum"), xg)
    arrays |= {"x": x.numpy(), "y": y.numpy(), "eval_logits": logits.detach().numpy(), "input_grad": grad.numpy()}
    model.train()
    with torch.no_grad():
        arrays["train_logits"] = model(x).numpy()
    arrays |= {f"after_train/{k}": v.numpy() for k, v in model.state_dict().items() if "running" in k}
    arrays["keys"] = np.array(list(state))
    return arrays


def main() -> None:
    checkout, commit = checkout_arguments(__doc__.splitlines()[0], "fra31/robust-finetuning")
    add_checkout_to_path(checkout)
    _install_shims()
    import torch

    torch.set_num_threads(1)
    import autopgd_train
    import data
    import train
    import utils
    from model_zoo.fast_models import PreActResNet18

    meta = provenance(REPOSITORY, commit, __file__)
    arrays = apgd_goldens(autopgd_train)
    save_npz(GOLDEN_DIR / "robust_finetuning_apgd.npz", arrays, meta | {"files": ["autopgd_train.py"], "eps": APGD_EPS})

    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        common = ["--batch_size", str(BATCH), "--n_ex_eval", str(BATCH), "--at_iter", "2"]
        scratch = run_train(
            train, data, utils,
            [*common, "--attack", "apgd", "--l_norms", "Linf L2 L1", "--epochs", "3",
             "--lr-max", "0.05", "--seed", "1"],
            Path(tmp) / "scratch",
        )  # fmt: skip
        work = Path(tmp) / "finetune"
        formula_pretrained(PreActResNet18, work)
        finetune = run_train(
            train, data, utils,
            [*common, "--finetune_model", "--model_name", "pretr_parity", "--epochs", "1", "--lr-max", "0"],
            work,
        )  # fmt: skip
        preact = preact_goldens(PreActResNet18, finetune["saved"][-1])
    for name, record in (("scratch", scratch), ("finetune", finetune)):
        runs[name] = {k: record[k] for k in ("lr", "draws", "groups", "apgd")}
    runs["scratch"]["settings"] = {"lr_max": 0.05, "epochs": 3, "batches_per_epoch": BATCHES, "weight_decay": 5e-4}
    runs["finetune"]["settings"] = {"lr_max": 0.0, "epochs": 1, "batches_per_epoch": BATCHES, "weight_decay": 5e-4}
    save_json(GOLDEN_DIR / "robust_finetuning_train.json", meta | {"files": ["train.py", "utils.py"], "runs": runs})
    save_npz(
        GOLDEN_DIR / "robust_finetuning_preact.npz",
        preact,
        meta | {"files": ["model_zoo/fast_models.py", "train.py"], "saved_as": "ep_1.pth of train.py, lr 0"},
    )


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
