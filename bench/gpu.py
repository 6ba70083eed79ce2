"""Images per second and achieved TFLOP/s of robustsoup's heavy loops on one accelerator.

For PreAct ResNet-18 at 32 px (robust-finetuning's ``preact_resnet18_rf``)
and ResNet-50 at 224 px (timm ``resnet50``, built without weights), measures

* APGD-10 L∞ adversarial training (:func:`robustsoup.train.loop.train_model`)
  in float32 and in bf16 + channels_last,
* clean forward passes (no gradient) in float32 and bf16 + channels_last,
* soups scored (:class:`robustsoup.soups.search.SoupScorer`: mix three
  checkpoints, score the soup on a fixed set) in bf16 + channels_last,
* AutoAttack's APGD-CE (:func:`robustsoup.attacks.robust_correct`, float32 as
  the evaluation rules run it; labels are the model's own predictions so
  every image is attacked),

each with the FLOPs of one image counted by ``torch.utils.flop_counter.FlopCounterMode``
on a small batch of the same loop, the achieved TFLOP/s (FLOPs/image × images/s) and
its fraction of the device's dense bf16 peak (:data:`BF16_PEAK_TFLOPS`; ``n/a`` for an
unknown device or a CPU). FlopCounterMode counts matrix products and convolutions only
(forward and backward), the work the peak refers to.

CUDA's kernel settings are the training jobs' (:func:`robustsoup.device.configure_cuda`: TF32 as the
config's ``cuda_tf32``, default on, and cudnn.benchmark on), so a "float32" row is the pipeline's float32
(TF32 products on GPUs that have them); ``--no-tf32`` measures strict float32 instead. The settings are
printed and written to the JSON (``cuda``).

On a CPU it runs tiny sizes (batch 2, one timed batch, ResNet-50 at 64 px, 2 attack
iterations, APGD-2 training, no warm-up) as a smoke test of the code paths; those numbers mean nothing.
The full GPU run is sized for under 8 minutes on one H200; ``--quick`` cuts it to
about a quarter.

    .venv/bin/python bench/gpu.py [--quick] [--json OUT] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from robustsoup.attacks import attack_plan, robust_correct
from robustsoup.data import ImageSplit
from robustsoup.device import Arithmetic, configure_cuda, machine_summary
from robustsoup.models import create_model
from robustsoup.soups.search import SoupScorer
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import make_input_policy

# Dense (no sparsity) bf16 tensor-core peak in TFLOP/s by a substring of torch.cuda.get_device_name():
# NVIDIA's data sheets (H100/H200 SXM 989, H100 PCIe 756, A100 312, L40S 362, RTX 4090 165 with fp32 accumulate).
BF16_PEAK_TFLOPS: dict[str, float] = {
    "H200": 989.0,
    "H100 80GB HBM3": 989.0,
    "H100 SXM": 989.0,
    "H100 PCIe": 756.0,
    "A100": 312.0,
    "L40S": 362.0,
}
EPS_LINF = 8 / 255


@dataclass
class Size:
    """How big one model's measurements are on this device."""

    label: str
    architecture: str
    pixels: int
    num_classes: int
    batch: int
    iterations: int  # timed batches of each loop (after one warm-up batch)
    soup_images: int
    soups: int
    attack_iters: int
    attack_images: int
    train_steps: int = 10  # APGD steps of adversarial training (10; 2 in the CPU smoke run)
    warmup: bool = True  # one untimed batch first (cuDNN's algorithm search, the allocator); off on a CPU


@dataclass
class Row:
    model: str
    measure: str
    arithmetic: str
    images_per_s: float
    gflop_per_image: float
    tflops: float
    peak_fraction: float | None  # of the device's dense bf16 peak; None when the peak is unknown


def bf16_peak(device: torch.device) -> float | None:
    """The device's dense bf16 peak in TFLOP/s from :data:`BF16_PEAK_TFLOPS`, None if unknown or a CPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def sizes(device: torch.device, quick: bool) -> list[Size]:
    """PreAct ResNet-18 at 32 px and ResNet-50 at 224 px on a GPU; tiny smoke sizes on a CPU."""
    if device.type != "cuda":
        return [
            Size("PreAct ResNet-18 (rf) 32px", "preact_resnet18_rf", 32, 10, 2, 1, 2, 1, 2, 2, 2, False),
            Size("ResNet-50 64px", "resnet50", 64, 1000, 2, 1, 2, 1, 2, 2, 2, False),
        ]
    scale = 4 if quick else 1
    return [
        Size("PreAct ResNet-18 (rf) 32px", "preact_resnet18_rf", 32, 10, 512, 20 // scale, 10000, 40 // scale,
             100, 2048 // scale),
        Size("ResNet-50 224px", "resnet50", 224, 1000, 128, 8 // scale, 1024, 20 // scale, 100, 512 // scale),
    ]  # fmt: skip


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], None], device: torch.device) -> float:
    """Seconds ``run`` takes, the device's queue drained before and after."""
    synchronize(device)
    start = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - start


class _GlobalOnly:
    """A stand-in for FlopCounterMode's per-module tracker: every count goes to ``Global``.

    The tracker's backward hooks fail under ``torch.autograd.grad`` with respect to an input
    (what every attack does: "A leaf node was passed to _will_engine_execute_node"), and the
    per-module breakdown is not needed here.
    """

    parents = ("Global",)

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *args) -> None:
        return None


def counted_flops(run: Callable[[], None]) -> int:
    """FLOPs of ``run`` (matrix products and convolutions, forward and backward)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        run()
    return counter.get_total_flops()


def new_model(size: Size, device: torch.device, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(size.architecture, size.num_classes, (0.5,) * 3, (0.25,) * 3).to(device)


def images(n: int, size: Size, seed: int = 0) -> ImageSplit:
    generator = torch.Generator().manual_seed(seed)
    pixels = (torch.rand(n, 3, size.pixels, size.pixels, generator=generator) * 255).to(torch.uint8)
    return ImageSplit(pixels, torch.randint(0, size.num_classes, (n,), generator=generator), "synthetic", "train")


def row(size: Size, measure: str, arithmetic: str, n_images: int, seconds: float, flops_per_image: float, peak) -> Row:
    rate = n_images / seconds
    tflops = flops_per_image * rate / 1e12
    return Row(size.label, measure, arithmetic, rate, flops_per_image / 1e9, tflops, tflops / peak if peak else None)


def bench_training(size: Size, device: torch.device, peak) -> list[Row]:
    """APGD-10 L∞ adversarial training, one epoch of ``iterations`` batches, float32 and bf16 + channels_last."""
    out = []
    policy = make_input_policy("Linf", {"Linf": EPS_LINF}, size.train_steps)
    for name, (precision, channels_last) in {"float32": ("float32", False), "bf16+cl": ("bf16", True)}.items():
        settings = TrainSettings(
            epochs=1, lr=0.01, batch_size=size.batch, precision=precision, channels_last=channels_last
        )
        model = new_model(size, device)

        def epoch(data: ImageSplit, model=model, settings=settings) -> None:
            train_model(model, data, policy, settings, device)

        if size.warmup:
            epoch(images(size.batch, size))
        data = images(size.batch * size.iterations, size, seed=1)
        seconds = timed(lambda data=data, epoch=epoch: epoch(data), device)
        small = min(size.batch, 16)
        flops = counted_flops(lambda epoch=epoch, small=small: epoch(images(small, size, seed=2))) / small
        out.append(row(size, f"APGD-{size.train_steps} training", name, len(data), seconds, flops, peak))
    return out


@torch.no_grad()
def bench_forward(size: Size, device: torch.device, peak) -> list[Row]:
    """Clean forward passes without gradients, float32 and bf16 + channels_last."""
    out = []
    for name, arithmetic in {"float32": Arithmetic(), "bf16+cl": Arithmetic("bf16", True)}.items():
        model = new_model(size, device).eval()
        x = images(size.batch, size).as_float()[0].to(device)
        if arithmetic.channels_last:
            model = model.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)

        def forward(n: int, model=model, x=x, arithmetic=arithmetic) -> None:
            with arithmetic.autocast(device):
                for _ in range(n):
                    model(x)

        forward(2 if size.warmup else 0)
        seconds = timed(lambda forward=forward: forward(size.iterations * 4), device)
        flops = counted_flops(lambda forward=forward: forward(1)) / size.batch
        out.append(row(size, "clean forward", name, size.batch * size.iterations * 4, seconds, flops, peak))
    return out


def bench_soups(size: Size, device: torch.device, peak) -> list[Row]:
    """Soups of three checkpoints scored on ``soup_images`` images; images/s and soups/s (in the measure's name)."""
    states = [new_model(size, "cpu", seed).state_dict() for seed in range(3)]
    arithmetic = Arithmetic("bf16", True)
    scorer = SoupScorer(new_model(size, device), states, ["a", "b", "c"], device, arithmetic, batch_size=size.batch)
    data = images(size.soup_images, size)
    x, y = scorer.prepare(data.images), data.labels.to(device)
    torch.manual_seed(0)
    weights = torch.distributions.Dirichlet(torch.ones(3)).sample((size.soups + 1,)).tolist()
    if size.warmup:
        scorer.accuracy(weights[0], x, y)

    def score_all() -> None:
        for w in weights[1:]:
            scorer.accuracy(w, x, y)

    seconds = timed(score_all, device)
    flops = counted_flops(lambda: scorer.accuracy(weights[0], x[: size.batch], y[: size.batch])) / min(
        size.batch, len(x)
    )
    result = row(size, "", "bf16+cl", size.soups * len(x), seconds, flops, peak)
    result.measure = f"soups scored ({size.soups / seconds:.2f} soups/s on {len(x)} images)"
    return [result]


def bench_attack(size: Size, device: torch.device, peak) -> list[Row]:
    """AutoAttack's APGD-CE (``attack_iters`` iterations, one restart, L∞ 8/255) in float32."""
    model = new_model(size, device).eval()
    x = images(size.attack_images, size).as_float()[0].to(device)
    with torch.no_grad():
        y = torch.cat([model(x[i : i + size.batch]).argmax(1) for i in range(0, len(x), size.batch)])
    plan = attack_plan("fast", "Linf", size.num_classes, n_iter=size.attack_iters)

    def attack(n: int) -> None:
        robust_correct(model, x[:n], y[:n], "Linf", EPS_LINF, plan, batch_size=size.batch)

    if size.warmup:
        attack(min(size.batch, len(x)))
    seconds = timed(lambda: attack(len(x)), device)
    small = min(size.batch, 16)
    flops = counted_flops(lambda: attack(small)) / small
    return [row(size, f"AutoAttack APGD-CE ({size.attack_iters} it)", "float32", len(x), seconds, flops, peak)]


def format_table(rows: list[Row]) -> str:
    header = f"{'model':<28}{'measure':<52}{'arith.':<9}{'img/s':>10}{'GFLOP/img':>11}{'TFLOP/s':>9}{'% bf16 pk':>10}"
    lines = [header]
    for r in rows:
        fraction = f"{100 * r.peak_fraction:.1f}" if r.peak_fraction is not None else "n/a"
        lines.append(
            f"{r.model:<28}{r.measure:<52}{r.arithmetic:<9}{r.images_per_s:>10.1f}{r.gflop_per_image:>11.2f}"
            f"{r.tflops:>9.2f}{fraction:>10}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the iterations and images")
    parser.add_argument("--json", type=Path, default=None, help="also write the device and rows here")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--only", default="", help="comma-separated subset of: train, forward, soups, attack")
    parser.add_argument("--model", default="", help="only the models whose label contains this (e.g. PreAct)")
    parser.add_argument("--no-tf32", action="store_true", help="strict float32 (config cuda_tf32: false)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device here; run with --device cpu for the smoke test")
    cuda = configure_cuda(tf32=not args.no_tf32)  # what a training job sets ({} without CUDA)
    peak = bf16_peak(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else machine_summary()
    print(
        f"{name}; dense bf16 peak {f'{peak:g} TFLOP/s' if peak else 'n/a (unknown device)'}; torch {torch.__version__}"
        f"; cuda settings {cuda or 'none (no CUDA)'}"
    )
    benches = {"train": bench_training, "forward": bench_forward, "soups": bench_soups, "attack": bench_attack}
    chosen = [b for b in args.only.split(",") if b] or list(benches)
    unknown = set(chosen) - set(benches)
    if unknown:
        raise SystemExit(f"--only: unknown {sorted(unknown)}; expected some of {', '.join(benches)}")
    rows: list[Row] = []
    start = time.perf_counter()
    for size in [s for s in sizes(device, args.quick) if args.model in s.label]:
        for key in chosen:
            rows.extend(benches[key](size, device, peak))
            print(format_table(rows[-1:]).splitlines()[-1] if rows else "", flush=True)
    print()
    print(format_table(rows))
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if args.json is not None:
        summary = {"device": name, "bf16_peak_tflops": peak, "torch": torch.__version__, "quick": args.quick}
        summary["cuda"] = cuda
        summary["rows"] = [asdict(r) for r in rows]
        args.json.write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
