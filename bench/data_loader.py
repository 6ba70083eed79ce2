"""Images per second of the data path on a generated JPEG folder: decoders × loader workers, and their agreement.

Writes a folder of photo-like JPEGs (a smooth random field plus noise, quality
90, ~80 KB each) of ImageNet's typical 500×375 / 375×500 and of 96×72, then
measures, in one run (the machine may be shared: ratios mean more than
seconds):

1. decoding alone, one thread: Pillow (``data.decoder: pil``) against
   ``torchvision.io`` + torch's uint8 antialiased resize (``torchvision``),
   for 500×375 → resize 256 → centre crop 224 and 96×72 → 64; and how far
   their images are apart (largest difference in grey levels, share of
   values that differ);
2. the batch source of a file-list split (``robustsoup.data.loading.BatchSource``,
   what training and evaluation read through) over one epoch, for each
   decoder × ``data.loader_workers`` (0: the job's process with its decoding
   threads; N: N worker processes);
3. one clean training epoch of the small PreAct ResNet on the CPU reading
   the file list with each number of workers (what decoding ahead is worth
   while the same CPU computes);
4. with CUDA: ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) batches
   of the same files, resized on the GPU (skipped, with the reason, without CUDA).

Measured on the 2-core AVX-512 machine this was written on (shared with other
jobs, so single numbers vary by ±15 % between runs; 256 files per shape,
batch 64, two runs):

* 224 px (500×375, resize 256): decoding, one thread, Pillow 490-513 img/s,
  torchvision 835-881 (1.70-1.72×); the loader (torchvision) with 0 / 1 / 2
  workers 856-1510 / 750-784 / 826-1404 img/s; a clean CPU training epoch
  (128 files) with 0 / 1 / 2 workers 6 / 4 / 4 img/s.
* 64 px (96×72): decoding Pillow 4264-5984, torchvision 5209-7980 img/s
  (1.2-1.3×); the loader 4794-4938 / 5266-5735 / 3832-9782 img/s; training
  25-38 / 28-33 / 29-34 img/s.

torchvision gives the same JPEG pixels as Pillow and resizes within one grey
level (0.2 % of the values differ at 224 px, 1.4 % at 64 px), at 1.7× Pillow's
rate for ImageNet-sized images, so ``data.decoder: torchvision`` is the
default. On a CPU, workers gain nothing for 224-px images (the decoding
threads of 0 workers already use both cores: Pillow and torch release the
GIL) and nothing measurable in training at either size (the computation is
two orders of magnitude slower than decoding; the differences are within the
run-to-run noise), while each worker is a process holding the file list, so
``data.loader_workers: auto`` is 0 without CUDA. With CUDA the CPU only
decodes and feeds the GPU, so auto gives the loader the job's CPUs less one.

    .venv/bin/python bench/data_loader.py [--images 256] [--train-images 128] [--batch 64] [--workers 0,1,2]
        [--summary out.json]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from robustsoup.data import FileSplit, decode_image, options
from robustsoup.data.loading import BatchSource
from robustsoup.data.options import DECODERS
from robustsoup.device import machine_summary

from measurements import Measurement, write_summary

# (name, sizes the files come in, resolution, resize): ImageNet-like evaluation, and small images.
SHAPES = {
    "224 px (500×375 JPEG, resize 256)": (((500, 375), (375, 500)), 224, 256),
    "64 px (96×72 JPEG)": (((96, 72),), 64, None),
}


def write_jpegs(folder: Path, n: int, sizes: tuple[tuple[int, int], ...], seed: int = 0) -> list[Path]:
    """``n`` photo-like JPEGs (quality 90) cycling through ``sizes`` (width, height)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        width, height = sizes[i % len(sizes)]
        low = (rng.random((height // 25 + 2, width // 25 + 2, 3)) * 255).astype(np.uint8)
        smooth = np.asarray(Image.fromarray(low).resize((width, height), Image.BICUBIC), dtype=np.float32)
        photo = np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.JPEG"
        Image.fromarray(photo).save(path, quality=90)
        paths.append(path)
    return paths


def best_rate(run, n: int, repeats: int = 3) -> float:
    """Images per second of ``run()`` (which handles ``n`` images), best of ``repeats`` (the first warms up)."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        rates.append(n / (time.perf_counter() - start))
    return max(rates)


def decode_rates(paths: list[Path], resolution: int, resize: int | None) -> dict[str, float]:
    """One thread, one image at a time: images/s of each decoder."""
    return {
        decoder: best_rate(lambda d=decoder: [decode_image(p, resolution, resize, d) for p in paths], len(paths))
        for decoder in DECODERS
    }


def agreement(paths: list[Path], resolution: int, resize: int | None) -> tuple[int, float]:
    """Largest difference (grey levels) between the decoders' images and the share of values that differ."""
    pil = torch.stack([decode_image(p, resolution, resize, "pil") for p in paths]).int()
    tv = torch.stack([decode_image(p, resolution, resize, "torchvision") for p in paths]).int()
    return int((pil - tv).abs().max()), float((pil != tv).float().mean())


def loader_rate(split: FileSplit, decoder: str, workers: int, batch: int) -> float:
    """Images/s of one epoch of a file-list split through the batch source (a second epoch: workers warm)."""
    source = BatchSource(split, "cpu", workers=workers, decoder=decoder)
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))
    return best_rate(lambda: sum(len(idx) for idx, _, _ in source.batches(order, batch)), len(split))


def training_rate(split: FileSplit, workers: int, batch: int) -> float:
    """Images/s of one clean training epoch of the small PreAct ResNet (width 16) on the CPU, reading the
    file list through ``workers`` loader workers: what decoding ahead is worth while the CPU computes."""
    from robustsoup.models import create_model
    from robustsoup.train.loop import TrainSettings, train_model
    from robustsoup.train.policies import make_input_policy

    def run() -> None:
        previous = options.configure({"loader_workers": workers})
        try:
            torch.manual_seed(0)
            model = create_model("preact_resnet_small", 10, (0.5,) * 3, (0.25,) * 3, width=16)
            settings = TrainSettings(epochs=1, lr=0.01, batch_size=batch, precision="float32")
            train_model(model, split, make_input_policy("none", {}, 1), settings, torch.device("cpu"))
        finally:
            options.OPTIONS = previous

    return best_rate(run, len(split), repeats=2)


def cuda_rate(paths: list[Path], resolution: int, resize: int | None, batch: int) -> float:
    """Images/s of nvJPEG decoding (``decode_jpeg(device="cuda")``, batches of ``batch`` files) with the
    resize and centre crop on the GPU."""
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2.functional import center_crop
    from torchvision.transforms.v2.functional import resize as tv_resize

    data = [read_file(str(p)) for p in paths]

    def run() -> None:
        for start in range(0, len(data), batch):
            for image in decode_jpeg(data[start : start + batch], device="cuda"):
                image = tv_resize(image, [resize or resolution], antialias=True)
                center_crop(image, [resolution, resolution])
        torch.cuda.synchronize()

    return best_rate(run, len(paths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256, help="JPEGs of each shape")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--train-images", type=int, default=128, help="JPEGs of each shape the training reads")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated data.loader_workers to measure")
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    workers = [int(w) for w in args.workers.split(",") if w]
    threads = torch.get_num_threads()
    print(f"{args.images} JPEGs per shape, batch {args.batch}; {machine_summary()}; os cpus={os.cpu_count()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, (sizes, resolution, resize) in SHAPES.items():
            paths = write_jpegs(Path(tmp) / str(resolution), args.images, sizes)
            kb = sum(p.stat().st_size for p in paths) / len(paths) / 1e3
            print(f"\n{label}: {kb:.0f} KB per file")

            torch.set_num_threads(1)
            rate = decode_rates(paths, resolution, resize)
            torch.set_num_threads(threads)
            worst, share = agreement(paths, resolution, resize)
            ratio = rate["torchvision"] / rate["pil"]
            print(
                f"  decode, one thread: pil {rate['pil']:.0f} img/s, torchvision {rate['torchvision']:.0f} img/s "
                f"({ratio:.2f}×); images differ by ≤ {worst} grey level(s) on {100 * share:.2f} % of the values"
            )
            rows.append(Measurement("data_loader", f"torchvision / Pillow decoding, {label}", ratio, "×", ">= 1.0"))
            rows.append(Measurement("data_loader", f"largest decoder difference, {label}", worst, "levels", "<= 1"))

            labels = torch.arange(len(paths)) % 10
            split = FileSplit(paths, labels, "generated", "train", resolution=resolution, resize=resize)
            print(
                f"  {'decoder':<12}" + "".join(f"{f'{w} workers img/s':>20}" for w in workers) + f"{'best / 0 ×':>12}"
            )
            for decoder in DECODERS:
                by_workers = {w: loader_rate(split, decoder, w, args.batch) for w in workers}
                best = max(by_workers, key=by_workers.get)
                base = by_workers.get(0)
                gain = by_workers[best] / base if base else float("nan")
                print(f"  {decoder:<12}" + "".join(f"{r:>20.0f}" for r in by_workers.values()) + f"{gain:>11.2f}×")
                if base and decoder == "torchvision":
                    rows.append(
                        Measurement(
                            "data_loader",
                            f"best workers ({best}) / 0 workers, CPU only, {decoder}, {label}",
                            gain,
                            "×",
                        )
                    )
                    rows.append(Measurement("data_loader", f"loader, 0 workers, {decoder}, {label}", base, "img/s"))

            n = min(args.train_images, len(paths))
            subset = FileSplit(paths[:n], labels[:n], "generated", "train", resolution=resolution, resize=resize)
            train = {w: training_rate(subset, w, args.batch) for w in workers}
            print(
                "  clean training epoch (PreAct ResNet small, CPU): "
                + ", ".join(f"{w} workers {r:.0f} img/s" for w, r in train.items())
            )
            if 0 in train:
                best = max(train, key=train.get)
                rows.append(
                    Measurement(
                        "data_loader",
                        f"CPU training, best workers ({best}) / 0 workers, {label}",
                        train[best] / train[0],
                        "×",
                    )
                )

            if torch.cuda.is_available():
                gpu = cuda_rate(paths, resolution, resize, args.batch)
                print(
                    f"  nvJPEG on {torch.cuda.get_device_name(0)}: {gpu:.0f} img/s ({gpu / rate['torchvision']:.1f}× "
                    "one CPU thread of torchvision)"
                )
                rows.append(
                    Measurement(
                        "data_loader", f"nvJPEG / one torchvision CPU thread, {label}", gpu / rate["torchvision"], "×"
                    )
                )
            else:
                print("  nvJPEG (decode_jpeg on CUDA): skipped, no CUDA device")
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
