"""``make gpu-check``: the GPU paths a first real run depends on, checked on one GPU in one table.

Runs, each timed, and prints one table (check, result, what was measured, seconds):

* ``bench/gpu.py --quick`` (throughput of the heavy loops; one row per measurement, img/s);
* a two-rank data-parallel training (gloo on CUDA, both ranks on one GPU, a few batches of a small
  CNN with the standard augmentation) against the same training in one process: the ranks read each
  image once per epoch between them, and the weights agree (float32, TF32 off);
* a GPU lease round trip: ``CUDA_VISIBLE_DEVICES`` narrowed to the leased GPU and restored, a second
  lease takes another GPU (or waits, on a machine of one), and a child process sees one device;
* an fp16 training attack (APGD L∞ under fp16 autocast) on confidently classified images: the images
  it moves, against float32, and against the unscaled gradient the attack used before;
* sharded against unsharded evaluation (APGD-CE, two shards, deterministic cuDNN): the per-point
  results must be identical.

The whole run is sized for under 8 minutes on one GPU (the benchmark takes most of it). ``--smoke``
runs every check on the CPU at toy sizes (gloo, float16 autocast on the CPU, a fake GPU list for the
lease) in well under a minute: the test suite runs it; its numbers mean nothing. Exits 1 when a check fails.

    .venv/bin/python bench/gpu_check.py [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from robustsoup.attacks import attack_plan, robust_correct
from robustsoup.attacks.apgd import apgd_train
from robustsoup.data import ImageSplit, loading
from robustsoup.device import configure_cuda, gpu_lease
from robustsoup.evaluate.adversarial import evaluation_shard
from robustsoup.train import distributed
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import CleanInputs

HERE = Path(__file__).resolve().parent


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


def _cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def _images(n: int, pixels: int = 32, seed: int = 0, dataset: str = "cifar10") -> ImageSplit:
    generator = torch.Generator().manual_seed(seed)
    images = (torch.rand(n, 3, pixels, pixels, generator=generator) * 255).to(torch.uint8)
    return ImageSplit(images, torch.randint(0, 10, (n,), generator=generator), dataset, "train")


# ----------------------------------------------------------------------------- the benchmark


def check_bench(device: torch.device, smoke: bool) -> list[Check]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "gpu.json"
        args = ["--device", "cpu", "--only", "forward", "--model", "PreAct"] if smoke else ["--quick"]
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(HERE / "gpu.py"), *args, "--json", str(out)], capture_output=True, text=True
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            return [Check("bench/gpu.py", False, done.stderr.strip().splitlines()[-1][:90], seconds)]
        summary = json.loads(out.read_text())
    rows = summary["rows"]
    checks = [Check("bench/gpu.py", True, f"{len(rows)} rows; cuda settings {summary.get('cuda', {})}", seconds)]
    for r in rows:
        short = r["model"].split(" (")[0].split(" 32px")[0]
        checks.append(
            Check(f"  {short}: {r['measure'][:28]} {r['arithmetic']}", True, f"{r['images_per_s']:.1f} img/s")
        )
    return checks


# ----------------------------------------------------------------------------- two ranks on one GPU


def _train(device: torch.device, data: ImageSplit, epochs: int, batch: int, dist=None) -> dict:
    model = _cnn()
    settings = TrainSettings(epochs=epochs, lr=0.05, batch_size=batch, seed=1, augmentation="standard")
    train_model(model, data, CleanInputs(), settings, device, distributed=dist)
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _rank(out: str, device_type: str, n: int, epochs: int, batch: int) -> None:
    """One rank: count the images this rank reads, train, and (rank 0) save the weights."""
    configure_cuda(tf32=False, deterministic=True)
    torch.set_num_threads(1)
    read = []
    batches = loading.BatchSource.batches

    def counted(self, order, batch_size, shard=None):
        for idx, x, y in batches(self, order, batch_size, shard):
            read.append(len(idx))
            yield idx, x, y

    loading.BatchSource.batches = counted
    group = distributed.current()
    device = group.device(torch.device(device_type))
    weights = _train(device, _images(n), epochs, batch, group)
    torch.save({"weights": weights, "read": sum(read), "device": str(device)}, Path(out) / f"rank{group.rank}.pt")


def check_two_ranks(device: torch.device, smoke: bool) -> list[Check]:
    n, epochs, batch = (24, 2, 8) if smoke else (512, 2, 64)
    configure_cuda(tf32=False, deterministic=True)
    one = _train(device, _images(n), epochs, batch)
    with tempfile.TemporaryDirectory() as tmp:
        distributed.spawn(_rank, 2, tmp, device.type, n, epochs, batch, backend="gloo", cuda=device.type == "cuda")
        ranks = [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(2)]
    diff = max((ranks[0]["weights"][k] - one[k]).abs().max().item() for k in one)
    read = sum(r["read"] for r in ranks)
    ok = read == n * epochs and diff < 1e-4
    detail = (
        f"gloo, ranks on {ranks[0]['device']}/{ranks[1]['device']}: read {read} images in {epochs} epochs of {n}; "
        f"max |w₂ − w₁| {diff:.1e}"
    )
    return [Check("2-rank training vs 1 process", ok, detail)]


# ----------------------------------------------------------------------------- a lease round trip


def check_lease(device: torch.device, smoke: bool) -> list[Check]:
    saved = {k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "ROBUSTSOUP_GPU_IDS")}
    if smoke:
        os.environ["ROBUSTSOUP_GPU_IDS"] = "0,1"
    try:
        with tempfile.TemporaryDirectory() as parent, gpu_lease(lease_dir=Path(parent) / "leases", timeout=5) as first:
            tmp = Path(parent) / "leases"
            if first is None:
                return [Check("GPU lease round trip", False, "no GPU to lease (nvidia-smi lists none)")]
            narrowed = os.environ.get("CUDA_VISIBLE_DEVICES") == first
            # A concurrent job: another process, with the environment this one started with.
            other_job = (
                "from robustsoup.device import NoFreeDeviceError, gpu_lease\ntry:\n"
                f"    with gpu_lease(lease_dir={str(tmp)!r}, timeout=0.5, poll=0.1) as g: print(g)\n"
                "except NoFreeDeviceError: print('waits')"
            )
            started = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
            started.update({k: v for k, v in saved.items() if v is not None and k == "CUDA_VISIBLE_DEVICES"})
            second = subprocess.run(
                [sys.executable, "-c", other_job], env=started, capture_output=True, text=True
            ).stdout.strip()
            other, distinct = f"another job's lease: {second or '?'}", second not in (first, "")
            probe = "import torch; print(torch.cuda.device_count())"
            seen = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip()
            mode = oct(Path(tmp).stat().st_mode & 0o7777)
        restored = os.environ.get("CUDA_VISIBLE_DEVICES") == saved["CUDA_VISIBLE_DEVICES"]
        sees = seen == "1" if not smoke else True
        ok = narrowed and distinct and restored and sees
        detail = f"leased {first}; {other}; child sees {seen} device(s); restored: {restored}; folder {mode}"
        return [Check("GPU lease round trip", ok, detail)]
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


# ----------------------------------------------------------------------------- an fp16 attack


def check_fp16_attack(device: torch.device, smoke: bool) -> list[Check]:
    n = 64 if smoke else 512
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10)).to(device).eval()
    with torch.no_grad():
        model[1].weight.mul_(300)  # confident: most losses below fp16's smallest gradient
    x = torch.rand(n, 3, 8, 8, device=device)
    y = model(x).argmax(1)

    def moved(fp16: bool) -> float:
        with torch.autocast(device.type, dtype=torch.float16, enabled=fp16):
            x_adv, _ = apgd_train(model, x, y, "Linf", 8 / 255, n_iter=5)
        return (x_adv - x).flatten(1).abs().amax(1).gt(0).float().mean().item()

    x_grad = x.clone().requires_grad_(True)
    with torch.autocast(device.type, dtype=torch.float16):
        loss = nn.functional.cross_entropy(model(x_grad).float(), y, reduction="none")
    unscaled = torch.autograd.grad(loss.sum(), x_grad)[0].flatten(1).abs().amax(1).gt(0).float().mean().item()
    fp32, fp16 = moved(False), moved(True)
    ok = abs(fp16 - fp32) <= 1 / n
    detail = f"images moved: fp16 {fp16:.2f}, float32 {fp32:.2f}; non-zero unscaled fp16 gradients {unscaled:.2f}"
    return [Check("fp16 APGD (loss scaled per image)", ok, detail)]


# ----------------------------------------------------------------------------- sharded evaluation


def check_sharded_evaluation(device: torch.device, smoke: bool) -> list[Check]:
    configure_cuda(tf32=True, deterministic=True)
    n, batch, iters = (12, 4, 3) if smoke else (512, 128, 20)
    model = _cnn().to(device).eval()
    x, y = _images(n).as_float()
    x, y = x.to(device), y.to(device)
    plan = attack_plan("fast", "Linf", 10, n_iter=iters)
    whole = robust_correct(model, x, y, "Linf", 8 / 255, plan, batch_size=batch)
    parts = []
    for index in range(2):
        s = evaluation_shard(n, n, batch, count=2, index=index)
        parts.append(robust_correct(model, x[s.start : s.stop], y[s.start : s.stop], "Linf", 8 / 255, plan,
                                    batch_size=batch))  # fmt: skip
    joined = torch.cat(parts)
    ok = torch.equal(joined.cpu(), whole.cpu())
    detail = f"{n} images, 2 shards of batches of {batch}: robust {int(whole.sum())}/{n}, identical: {ok}"
    return [Check("sharded vs unsharded evaluation", ok, detail)]


CHECKS: dict[str, Callable[[torch.device, bool], list[Check]]] = {
    "bench": check_bench,
    "ranks": check_two_ranks,
    "lease": check_lease,
    "fp16": check_fp16_attack,
    "shards": check_sharded_evaluation,
}


def format_table(checks: list[Check]) -> str:
    lines = [f"{'check':<44}{'result':<8}{'seconds':>8}  measured"]
    for c in checks:
        seconds = f"{c.seconds:.1f}" if c.seconds else ""
        lines.append(f"{c.name:<44}{'ok' if c.ok else 'FAIL':<8}{seconds:>8}  {c.detail}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every check on the CPU at toy sizes (the tests)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(CHECKS)}")
    args = parser.parse_args(argv)
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("make gpu-check needs a CUDA device (torch sees none); --smoke runs it on the CPU")
    device = torch.device("cpu" if args.smoke else "cuda")
    chosen = [c for c in args.only.split(",") if c] or list(CHECKS)
    checks: list[Check] = []
    for key in chosen:
        start = time.perf_counter()
        try:
            found = CHECKS[key](device, args.smoke)
        except Exception as exc:  # a check that crashes is a failed check; the table still prints
            found = [Check(key, False, f"{type(exc).__name__}: {exc}"[:120])]
        if not found[0].seconds:
            found[0].seconds = time.perf_counter() - start
        checks.extend(found)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (smoke: the numbers mean nothing)"
    print(f"gpu-check on {name}, torch {torch.__version__}")
    print(format_table(checks))
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
