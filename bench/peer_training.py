"""Peer ratio: APGD-10 L∞ adversarial training, robustsoup's runner against robust-finetuning's train.py.

A: :func:`robustsoup.train.run.train_and_checkpoint` (the runner every training goes through; it
writes its checkpoint) fine-tuning ``preact_resnet18_rf`` for one epoch of ``--batches`` batches
of ``--batch`` images with APGD-10 L∞ (ε = 8/255), SGD lr 0.01 (piecewise-ft), momentum 0.9,
weight decay 5e-4, with ``precision: auto`` (bf16 + channels_last on a CPU with native bf16) and
with ``float32``.
B: fra31/robust-finetuning's own ``train.py`` ``main()`` from a local checkout
(``--refs DIR/robust-finetuning``, the parity kit's), fine-tuning (``--finetune_model``) the same
starting weights on the same batches in the same order (``--attack apgd --l_norms Linf --at_iter 10
--epochs 1``), float32 as it always runs; it saves ``ep_1.pth`` as our runner saves its checkpoint.
The parity kit's shims (``tools/parity/gen_robust_finetuning.py``) let it run on a CPU today; its
data loaders are replaced by the fixed batches. Without a checkout, B is a plain-PyTorch loop that
mirrors train.py step for step (eval mode for the attack, the norm draw, train mode, zero_grad,
forward, loss, backward, step, ``loss.item()`` and the accuracy tally) with robustsoup's
``apgd_train`` (parity-tested against the reference's), and every line says so.

Results checked equal: both trainings start from the same weights, see the same images, so their
weight updates must agree: the relative distance ‖Δ_A − Δ_B‖ / ‖Δ_B‖ of the updates is at most
1e-3 in float32 (round-off) and 0.05 with ``auto`` (bf16 autocast of every forward pass).

Goal: B's time / A's time ≥ 2.5 with ``auto`` on a CPU with native bf16, ≥ 1.2 in float32.

    .venv/bin/python bench/peer_training.py [--quick] [--refs /tmp/refs] [--batches 2] [--batch 128] [--summary out.json]

``--quick``: one batch of 16 images, one round (a smoke test of the code path).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import shutil
import sys
import tempfile
from functools import partial
from pathlib import Path

import torch
from torch.nn import functional as F

from robustsoup.attacks.apgd import apgd_train
from robustsoup.data import ImageSplit
from robustsoup.device import cpu_native_bf16, resolve_arithmetic
from robustsoup.models import create_model
from robustsoup.models.registry import IDENTITY_STATISTICS
from robustsoup.train.loop import TrainSettings, learning_rate
from robustsoup.train.policies import make_input_policy
from robustsoup.train.run import new_meta, train_and_checkpoint

from measurements import Measurement, write_summary
from peer_common import (
    DEFAULT_REFS,
    Side,
    alternate,
    checkout,
    load_note,
    machine_line,
    median,
    pair_ratios,
    parity_tools,
)

EPS, STEPS, LR, WEIGHT_DECAY, MOMENTUM = 8 / 255, 10, 0.01, 5e-4, 0.9
TOLERANCE = {"float32": 1e-3, "auto": 0.05}
GOALS = {"float32": ">= 1.2", "auto": ">= 2.5"}
IDENTITY = {"architecture": "preact_resnet18_rf", "dataset": "cifar10", "model_kwargs": {"activation": "softplus"}}


def starting_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS).net.state_dict()


def fresh_model(state: dict[str, torch.Tensor]):
    model = create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS)
    model.net.load_state_dict(state)
    return model


def ours(state, data: ImageSplit, batch: int, precision: str, work: Path, device) -> dict[str, torch.Tensor]:
    """One epoch through robustsoup's runner; its trained network's state."""
    model = fresh_model(state)
    settings = TrainSettings(epochs=1, lr=LR, batch_size=batch, precision=precision, channels_last="auto")
    policy = make_input_policy("Linf", {"Linf": EPS}, STEPS)
    meta = new_meta(IDENTITY, "peer")
    train_and_checkpoint(model, meta, data, policy, settings, work / "peer.safetensors", device, resume=False)
    return {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}


def epoch_batches(data: ImageSplit, batch: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The batches of robustsoup's first epoch (its seeded order), as [0,1] floats: what B is fed."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    x = data.images.float().div_(255.0)
    return [(x[order[i : i + batch]], data.labels[order[i : i + batch]]) for i in range(0, len(order), batch)]


class Reference:
    """robust-finetuning's train.py, imported once from a checkout with the parity kit's shims."""

    def __init__(self, folder: Path, device) -> None:
        parity_tools()
        from gen_robust_finetuning import _install_shims
        from golden_io import add_checkout_to_path

        add_checkout_to_path(folder)
        cuda = torch.Tensor.cuda, torch.nn.Module.cuda
        _install_shims()
        if torch.device(device).type == "cuda":  # the shims make .cuda() a no-op for CPU runs only
            torch.Tensor.cuda, torch.nn.Module.cuda = cuda
        import data as rf_data
        import train as rf_train

        self.train, self.data, self.device = rf_train, rf_data, torch.device(device)

    def __call__(self, state, batches, batch: int, work: Path) -> dict[str, torch.Tensor]:
        shutil.rmtree(work / "runs", ignore_errors=True)  # train.py names each run anew: keep one ep_1.pth
        (work / "models").mkdir(parents=True, exist_ok=True)
        torch.save(state, work / "models" / "pretr_peer.pth")
        self.data.load_cifar10_train = lambda args, only_train=False: (batches, None)
        self.data.load_cifar10 = lambda n, data_dir=None, training_set=False, device=None: (
            batches[0][0][:n].to(self.device),
            batches[0][1][:n].to(self.device),
        )
        argv = ["--finetune_model", "--model_name", "pretr_peer", "--attack", "apgd", "--l_norms", "Linf"]
        argv += ["--at_iter", str(STEPS), "--epochs", "1", "--batch_size", str(batch), "--lr-max", str(LR)]
        argv += ["--n_ex_eval", str(min(batch, 16)), "--save_dir", str(work / "runs"), "--data_dir", str(work)]
        sys.argv = ["train.py", *argv]
        with contextlib.chdir(work), contextlib.redirect_stdout(io.StringIO()):
            self.train.main()
        (saved,) = (work / "runs").rglob("ep_1.pth")
        return torch.load(saved, map_location="cpu")


def mirrored_loop(state, batches, device) -> dict[str, torch.Tensor]:
    """train.py's step structure in plain PyTorch (no checkout): fine-tuning, one norm, float32."""
    model = fresh_model(state).to(device).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    acc_norms, running_loss, running_acc = [[0.0, 0.0]], 0.0, 0.0
    random.seed(0)
    for i, (x_loader, y_loader) in enumerate(batches):
        x, y = x_loader.to(device), y_loader.to(device)
        lr = learning_rate("piecewise-ft", LR, i, len(batches), len(batches))
        optimizer.param_groups[0].update(lr=lr)
        model.eval()
        ps = [val[0] / val[1] for val in acc_norms] if all(val[1] > 0 for val in acc_norms) else [0.5]
        random.choices(range(len(ps)), weights=[1.0 - p for p in ps])
        x_tr, robust = apgd_train(model, x, y, "Linf", EPS, n_iter=STEPS, training=True)
        acc_norms[0][0] += float(robust.sum())
        acc_norms[0][1] += x.shape[0]
        model.train()
        optimizer.zero_grad()
        outputs = model(x_tr)
        loss = F.cross_entropy(outputs, y)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        running_acc += (outputs.max(dim=-1)[1] == y).cpu().float().sum().item()
    return {k: v.detach().cpu().clone() for k, v in model.net.state_dict().items()}


def update_distance(start, a, b) -> float:
    """‖Δa − Δb‖ / ‖Δb‖ over the floating tensors (weights and BatchNorm statistics)."""
    num = den = 0.0
    for key, value in start.items():
        if not value.is_floating_point():
            continue
        da, db = a[key].double() - value.double(), b[key].double() - value.double()
        num += float(((da - db) ** 2).sum())
        den += float((db**2).sum())
    return (num / den) ** 0.5 if den > 0 else float("inf")


def measure(
    batches: int, batch: int, rounds: int, refs: Path | None, device: str = "cpu", log=print
) -> list[Measurement]:
    folder = checkout(refs, "robust-finetuning", "train.py")
    state = starting_state()
    generator = torch.Generator().manual_seed(0)
    n = batches * batch
    data = ImageSplit(
        (torch.rand(n, 3, 32, 32, generator=generator) * 255).to(torch.uint8),
        torch.randint(0, 10, (n,), generator=generator),
        "cifar10",
        "train",
    )
    fed = epoch_batches(data, batch)
    if folder is not None:
        reference = Reference(folder, device)
        peer = f"robust-finetuning train.py ({folder})"
    else:
        reference = None
        peer = "FALLBACK plain-PyTorch loop mirroring train.py (no robust-finetuning checkout)"
    log(f"APGD-{STEPS} L∞ fine-tuning of preact_resnet18_rf, 1 epoch = {batches} batch(es) of {batch}; B: {peer}")
    rows = []
    for precision in ("auto", "float32"):
        resolved = resolve_arithmetic(precision, "auto", device)
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            a = Side(
                f"robustsoup ({precision} → {resolved})", partial(ours, state, data, batch, precision, work, device)
            )
            if reference is not None:
                b = Side("robust-finetuning train.py", partial(reference, state, fed, batch, work / "ref"))
            else:
                b = Side("mirrored loop (fallback)", partial(mirrored_loop, state, fed, device))
            log(f"{precision}:")
            alternate(a, b, rounds, device, log)
        distance = update_distance(state, a.result, b.result)
        if not distance <= TOLERANCE[precision]:
            raise SystemExit(
                f"{precision}: the weight updates differ by {distance:.3g} (relative), more than "
                f"{TOLERANCE[precision]}; the two trainings did not do the same work"
            )
        ratio = b.best / a.best
        pairs = [1.0 / r for r in pair_ratios(a, b)]
        native = cpu_native_bf16() if torch.device(device).type == "cpu" else None
        goal = GOALS[precision] if precision == "float32" or native or native is None else ""
        log(
            f"  updates agree (relative distance {distance:.2e} ≤ {TOLERANCE[precision]}); "
            f"best {a.best:.2f} s vs {b.best:.2f} s: {ratio:.2f}× (goal {goal or 'none: bf16 not native'}); "
            f"per pair {', '.join(f'{r:.2f}' for r in pairs)}, median {median(pairs):.2f}×"
        )
        label = "robust-finetuning" if reference is not None else "mirrored loop (FALLBACK, no checkout)"
        rows.append(
            Measurement(
                "peer_training",
                f"{label} / robustsoup time, APGD-10 L∞ training, {precision} ({resolved}), {batches}×{batch} images"
                f" (updates agree: {distance:.1e} ≤ {TOLERANCE[precision]})",
                ratio,
                "×",
                goal,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one batch of 16 images, one round")
    parser.add_argument("--refs", type=Path, default=DEFAULT_REFS, help="folder of the parity kit's checkouts")
    parser.add_argument("--batches", type=int, default=None, help="batches in the epoch (default 2, quick 1)")
    parser.add_argument("--batch", type=int, default=None, help="batch size (default 128, quick 16)")
    parser.add_argument("--rounds", type=int, default=None, help="A/B alternations (default 2, quick 1)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    batches = args.batches or (1 if args.quick else 2)
    batch = args.batch or (16 if args.quick else 128)
    rounds = args.rounds or (1 if args.quick else 2)
    print(machine_line(), flush=True)
    print("goal: robust-finetuning's time / robustsoup's ≥ 2.5 with auto (native bf16), ≥ 1.2 in float32")
    rows = measure(batches, batch, rounds, args.refs, args.device, log=lambda s: print(s, flush=True))
    print(f"measured under {load_note()}")
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
