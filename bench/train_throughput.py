"""Images per second of adversarial training: float32, float32 + channels_last, bf16 + channels_last.

One adversarial training epoch (APGD, L∞, the given attack steps) over
synthetic 32×32 images, for the demo model and PreAct ResNet-18, in each
arithmetic; prints images/s and the ratios to plain float32, measured in one
run (the machine is shared: ratios mean more than seconds), with the CPU's
capability and whether it computes bf16 natively. The bf16 ratio is held to
a goal only where bf16 is native; elsewhere `precision: auto` picks float32
and the ratio shows what forcing bf16 would cost.

    .venv/bin/python bench/train_throughput.py [--images 256] [--batch 128] [--steps 10] [--summary out.json]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from robustsoup.data import ImageSplit
from robustsoup.device import cpu_native_bf16, machine_summary, resolve_arithmetic
from robustsoup.models import create_model
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import make_input_policy

from measurements import Measurement, write_summary

MODELS = {
    "preact_resnet_small (w16)": ("preact_resnet_small", {"width": 16}),
    "preact_resnet18": ("preact_resnet18", {}),
}


def images_per_second(
    architecture: str, kwargs: dict, data: ImageSplit, precision: str, channels_last: bool, batch: int, steps: int
) -> float:
    torch.manual_seed(0)
    model = create_model(architecture, 10, (0.5,) * 3, (0.25,) * 3, **kwargs)
    settings = TrainSettings(epochs=1, lr=0.01, batch_size=batch, precision=precision, channels_last=channels_last)
    policy = make_input_policy("Linf", {"Linf": 8 / 255}, steps)
    start = time.perf_counter()
    train_model(model, data, policy, settings, torch.device("cpu"))
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    data = ImageSplit(
        (torch.rand(args.images, 3, 32, 32, generator=generator) * 255).to(torch.uint8),
        torch.randint(0, 10, (args.images,), generator=generator),
        "synthetic",
        "train",
    )
    native = cpu_native_bf16()
    auto = resolve_arithmetic("auto", "auto", "cpu")
    print(
        f"APGD-{args.steps} L∞ training, {args.images} images, batch {args.batch}; {machine_summary()}; "
        f"precision auto → {auto}"
    )
    arithmetics = {"fp32": ("float32", False), "fp32+cl": ("float32", True), "bf16+cl": ("bf16", True)}
    print(f"{'model':<28}" + "".join(f"{name + ' img/s':>15}" for name in arithmetics) + f"{'cl ×':>7}{'bf16 ×':>8}")
    rows = []
    for label, (architecture, kwargs) in MODELS.items():
        # Best of two runs each: the first pays one-time warm-up costs.
        rate = {
            name: max(
                images_per_second(architecture, kwargs, data, precision, cl, args.batch, args.steps) for _ in range(2)
            )
            for name, (precision, cl) in arithmetics.items()
        }
        print(
            f"{label:<28}"
            + "".join(f"{r:>15.1f}" for r in rate.values())
            + f"{rate['fp32+cl'] / rate['fp32']:>6.2f}×{rate['bf16+cl'] / rate['fp32']:>7.2f}×"
        )
        rows.append(
            Measurement(
                "train_throughput",
                f"float32 channels_last / contiguous training, {label}",
                rate["fp32+cl"] / rate["fp32"],
                "×",
                ">= 0.95",
            )
        )
        bf16_label = f"bf16+channels_last / float32 training, {label} (bf16 {'native' if native else 'emulated'})"
        rows.append(
            Measurement("train_throughput", bf16_label, rate["bf16+cl"] / rate["fp32"], "×", ">= 1.5" if native else "")
        )
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
