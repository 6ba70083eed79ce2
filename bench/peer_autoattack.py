"""Peer ratio: AutoAttack standard evaluation, robustsoup's against pyautoattack's own entry point.

A: :func:`robustsoup.attacks.robust_correct` with ``attack_plan("standard", norm, 10)``;
B: ``pyautoattack.AutoAttack(model, norm=…, eps=…, version='standard', seed=0)`` with
``attacks_to_run = ['apgd-ce', 'apgd-t']`` (as fra31/robust-finetuning's eval.py runs it, and
as robustsoup's ``standard`` mode mirrors it), ``run_standard_evaluation(x, y, batch_size=n)``.
Same model (``preact_resnet18_rf``, width 16 by default so that ``make bench`` takes minutes;
random weights, eval mode, float32), same points (labels are the model's own predictions, so every
point is attacked; such a network keeps them all, so APGD-T runs in full), per norm at
robust-finetuning's CIFAR-10 radii. Per-point robust correctness must be identical; the ratio is A's time over B's
(goal ≤ 1.0: the evaluation costs no more than AutoAttack itself). A computes in the memory format that
``evaluate.channels_last`` (``--channels-last``, default: the config's default) resolves to on this device
(``device.resolve_channels_last``); B as AutoAttack always does, contiguous.

    .venv/bin/python bench/peer_autoattack.py [--quick] [--n 16] [--rounds 2] [--summary out.json]

``--quick``: 4 points on a width-4 ``preact_resnet18_rf``, one round (a smoke test of the code path).
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path

import torch

from robustsoup.attacks import attack_plan, robust_correct
from robustsoup.config import schema_defaults
from robustsoup.device import resolve_channels_last
from robustsoup.models import create_model
from robustsoup.models.registry import IDENTITY_STATISTICS

from measurements import Measurement, write_summary
from peer_common import CountingModel, Side, alternate, load_note, machine_line, median, pair_ratios

# fra31/robust-finetuning train.py eps_dict['cifar10']
EPS = {"Linf": 8 / 255, "L2": 0.5, "L1": 12.0}
GOAL = "<= 1.0"


def autoattack_correct(model, x, y, norm: str, eps: float, device) -> torch.Tensor:
    """Per-point robust correctness from pyautoattack's AutoAttack, standard version, APGD-CE + APGD-T."""
    from pyautoattack import AutoAttack

    adversary = AutoAttack(model, norm=norm, eps=eps, version="standard", seed=0, device=device)
    adversary.attacks_to_run = ["apgd-ce", "apgd-t"]  # robust-finetuning eval.py
    adversary.verbose = False
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        return model(x_adv).argmax(1) == y


def default_channels_last() -> bool | str:
    """``evaluate.channels_last`` as the config schema sets it by default."""
    return schema_defaults("evaluate")["channels_last"]


def measure(
    n: int,
    rounds: int,
    width: int,
    device: str = "cpu",
    log=print,
    norms: tuple[str, ...] = tuple(EPS),
    channels_last: bool | str | None = None,
) -> list[Measurement]:
    """Time both sides per norm, check per-point equality; one row per norm (A time / B time)."""
    torch.manual_seed(0)
    model = create_model("preact_resnet18_rf", 10, *IDENTITY_STATISTICS, width=width).to(device).eval()
    setting = default_channels_last() if channels_last is None else channels_last
    last = resolve_channels_last(setting, device, model)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, 32, 32, generator=generator).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    log(
        f"AutoAttack standard (apgd-ce + apgd-t), preact_resnet18_rf width {width}, {n} points, {rounds} round(s); "
        f"robustsoup's memory format: {'channels_last' if last else 'contiguous'} (evaluate.channels_last: {setting})"
    )
    # Each side gets its own counting wrapper: the forward passes (and images) it ran, which load does not move.
    model_a, model_b = CountingModel(model).eval(), CountingModel(model).eval()
    rows = []
    for norm in norms:
        eps = EPS[norm]
        plan = attack_plan("standard", norm, 10)
        ours = Side(
            "robustsoup robust_correct",
            partial(robust_correct, model_a, x, y, norm, eps, plan, 0, len(x), channels_last=last),
        )
        theirs = Side("pyautoattack AutoAttack", partial(autoattack_correct, model_b, x, y, norm, eps, device))
        log(f"{norm} (ε={eps:g}, {plan.name}):")
        alternate(ours, theirs, rounds, device, log)
        a, b = ours.result.cpu(), theirs.result.cpu()
        if not torch.equal(a, b):
            raise SystemExit(
                f"{norm}: per-point results differ on {int((a != b).sum())} of {n} points; the ratio is not reported"
            )
        (calls_a, images_a), (calls_b, images_b) = model_a.reset(), model_b.reset()
        log(
            f"  forward passes per run: robustsoup {calls_a // rounds} ({images_a // rounds} images), "
            f"AutoAttack {calls_b // rounds} ({images_b // rounds} images)"
        )
        ratio = ours.best / theirs.best
        pairs = pair_ratios(ours, theirs)
        log(
            f"  equal per point ({int(a.sum())}/{n} robust); best {ours.best:.2f} s vs {theirs.best:.2f} s: "
            f"{ratio:.3f}× AutoAttack's time (goal {GOAL}); per pair {', '.join(f'{r:.3f}' for r in pairs)}, "
            f"median {median(pairs):.3f}"
        )
        rows.append(
            Measurement(
                "peer_autoattack",
                f"robust_correct / AutoAttack time, {norm}, {n} points (equal per point; forward passes "
                f"{calls_a // rounds} vs {calls_b // rounds}; {'channels_last' if last else 'contiguous'})",
                ratio,
                "×",
                GOAL,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 points, width 4, one round")
    parser.add_argument("--n", type=int, default=None, help="points per norm (default 16, quick 4)")
    parser.add_argument("--rounds", type=int, default=None, help="A/B alternations (default 2, quick 1)")
    parser.add_argument("--width", type=int, default=None, help="network width (default 16, quick 4)")
    parser.add_argument("--norms", default=",".join(EPS), help=f"comma-separated subset of {', '.join(EPS)}")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--channels-last",
        choices=("auto", "true", "false"),
        default=None,
        help="robustsoup's evaluate.channels_last (default: the config's default)",
    )
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    n = args.n or (4 if args.quick else 16)
    rounds = args.rounds or (1 if args.quick else 2)
    width = args.width or (4 if args.quick else 16)
    print(machine_line(), flush=True)
    print(f"goal: robustsoup's standard evaluation {GOAL}× AutoAttack's time, per-point results identical")
    norms = tuple(args.norms.split(","))
    unknown = sorted(set(norms) - set(EPS))
    if unknown:
        raise SystemExit(f"unknown norms {unknown}; expected some of {list(EPS)}")
    setting = {"true": True, "false": False}.get(args.channels_last, args.channels_last)
    rows = measure(
        n, rounds, width, args.device, log=lambda s: print(s, flush=True), norms=norms, channels_last=setting
    )
    print(f"measured under {load_note()}")
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
