"""Common corruptions of Hendrycks & Dietterich (CIFAR-10-C / ImageNet-C), deterministic and offline.

One vocabulary for the whole pipeline:

- :data:`CORRUPTIONS` — the 19 names, the 15 standard ones first
  (:data:`STANDARD_CORRUPTIONS`) then the 4 extra ones (:data:`EXTRA_CORRUPTIONS`);
- :data:`FAMILIES` — name → ``noise`` / ``blur`` / ``weather`` / ``digital``;
- :data:`SEVERITIES` — 1 … 5;
- :func:`corrupt` — uint8 images (NHWC or NCHW, numpy or torch) → uint8 images of the same shape;
- :func:`write_corrupted_split` / :func:`read_corrupted_split` — Hendrycks' CIFAR-10-C layout on disk:
  ``<dir>/<corruption>.npy`` uint8 (5·N, H, W, 3) with severity s in rows (s−1)·N … s·N − 1, and
  ``<dir>/labels.npy`` int64 (5·N,), the labels repeated 5 times.

Constants
---------
Two tables, both transcribed from ``hendrycks/robustness``:

- ``"cifar"`` (:data:`CIFAR_CONSTANTS`): ``ImageNet-C/create_c/make_cifar_c.py``, e.g. gaussian_noise
  σ = .04 .06 .08 .09 .10;
- ``"imagenet"`` (:data:`IMAGENET_CONSTANTS`): ``ImageNet-C/create_c/make_imagenet_c.py``, e.g.
  gaussian_noise σ = .08 .12 .18 .26 .38 (the same numbers as corrupt-tta 0.1.7 except for elastic_transform
  and spatter, below).

:func:`constants_for_shape` picks the table: **32 × 32 → "cifar"; every other size → "imagenet"**.
That includes in-between sizes such as 64 × 64, which get the ImageNet constants *unchanged*: all
constants are in pixels and are never rescaled to the image, so at 64 px the blurs, fog and elastic
distortion are much stronger relative to the image than at 224 px. Hendrycks used separate constants
for Tiny-ImageNet-C (64 px); they are not implemented. :func:`corrupt` and
:func:`write_corrupted_split` take ``constants="cifar"`` or ``"imagenet"`` to override the rule.

Backends
--------
Every corruption has its own implementation here (:mod:`.corruption_ops`), written from the
reference's semantics. With the ImageNet table, the five corruptions for which corrupt-tta 0.1.7
matches ``make_imagenet_c.py`` exactly and draws no random numbers go through corrupt-tta
(:data:`IMAGENET_BACKEND`); corrupt-tta is not used for the rest because it deviates from the
reference there: impulse_noise draws from an unseeded generator (not reproducible), glass_blur swaps
pixels in a different order (and truly swaps, see below), motion_blur and snow use a symmetric box
kernel that ignores sigma, fog ignores the wibble decay, spatter is a different algorithm, elastic
uses 224 where the reference (and the published ImageNet-C) use 244, and frost draws from 6 textures
instead of 5.

Determinism
-----------
Image i of a call draws from its own generator, PCG64 seeded by
SeedSequence((seed, crc32(corruption), severity), spawn_key=(index_offset + i,)). Same pixels,
corruption, severity, seed and index → same bytes, whatever the batch size or chunking
(``index_offset`` lets chunked callers keep the indices of the whole split). So :func:`corrupt` can
split a batch into ranges of images over threads (``workers``, default torch's thread count: a
workflow job's ``threads``) and :func:`corrupt_groups` can run the (corruption, severity) groups of a
mixed training batch on threads together, both giving the bytes of one call, group by group.

Deviations from the reference scripts
-------------------------------------
- Random draws come from the per-image generators above, not numpy's global state: same
  distributions, different samples. (The reference is unseeded; its bytes cannot be reproduced.)
- motion_blur and snow: ImageMagick (Wand) is replaced by :func:`.corruption_ops.motion_blur_image`,
  which implements ``MagickMotionBlurImage(radius, sigma, angle)``: 2·ceil(radius)+1 taps on a
  one-sided ray at ``angle``, Gaussian weights exp(−i²/2σ²), offsets rounded as ImageMagick rounds
  them, edge pixels repeated beyond the border, and the result brought to 8 bits as the reference
  gets it: ImageMagick's 16-bit quantum round(v·257), then floor(quantum / 257) (the 8-bit PNG the
  reference decodes). Equal to the reference's ImageMagick output on the parity goldens
  (``tests/parity/test_cifar_c.py``); rounding v to 8 bits instead, as before, differed by 1–2 grey
  levels on 4–50 % of the values.
- impulse_noise: salt-and-pepper per value (each of H·W·3 values flips with probability c, half to
  0, half to 1), as scikit-image's ``random_noise(mode="s&p")`` does.
- glass_blur: reproduces what the reference *does*: its "swap" is a tuple assignment of numpy views,
  so only the visited pixel changes (it copies its neighbour). The shuffle is vectorised
  (:func:`.corruption_ops.glass_shuffle`) and equal to the sequential loop.
- frost: the textures are frost1–frost5 from the corrupt-tta 0.1.7 wheel (SHA-256 pinned in
  :data:`.corruption_ops.FROST_FILES`), decoded by OpenCV and, for the CIFAR table, resized by 0.2
  as in ``make_cifar_c.py``. A texture smaller than the image is enlarged bilinearly first (the
  reference would fail).
- spatter (water, severities 1–3): if no liquid survives the threshold, the reference divides by
  zero and produces NaN; here the image is left unchanged.
- Any size, including non-square: the reference hard-codes 32 or 224 in a few places (crop sizes, the
  fog map); here they follow the image (fog uses the smallest power-of-two map ≥ the longer side,
  which is 32 for 32 px and 256 for 224 px as in the reference).
- The released ImageNet-C is additionally re-encoded as JPEG (quality 85); :func:`corrupt` returns
  the arrays, without that step (the ImageNet-C-layout copies of a file-list split,
  :mod:`.corrupted`, take it; training corrupts on the fly without it).
- Library versions differ from 2018 (Pillow's JPEG encoder, OpenCV, SciPy, scikit-image), which can
  move individual values by a grey level.
"""

from __future__ import annotations

import itertools
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lazy_loader
import numpy as np

from ..io import atomic_path
from . import corruption_ops

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

STANDARD_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
CORRUPTIONS: tuple[str, ...] = STANDARD_CORRUPTIONS + EXTRA_CORRUPTIONS

FAMILIES: dict[str, str] = {
    "gaussian_noise": "noise",
    "shot_noise": "noise",
    "impulse_noise": "noise",
    "speckle_noise": "noise",
    "defocus_blur": "blur",
    "glass_blur": "blur",
    "motion_blur": "blur",
    "zoom_blur": "blur",
    "gaussian_blur": "blur",
    "snow": "weather",
    "frost": "weather",
    "fog": "weather",
    "spatter": "weather",
    "brightness": "digital",
    "contrast": "digital",
    "elastic_transform": "digital",
    "pixelate": "digital",
    "jpeg_compression": "digital",
    "saturate": "digital",
}

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
CONSTANT_SETS: tuple[str, ...] = ("cifar", "imagenet")

# Constants per corruption, one entry per severity 1..5. Tuples follow the reference's order:
#   glass_blur (sigma, max_delta, iterations)      defocus_blur (radius, alias_blur)
#   motion_blur (radius, sigma)                    zoom_blur np.arange(start, stop, step) of factors
#   snow (mean, std, zoom, threshold, blur radius, blur sigma, image weight)
#   frost (image weight, frost weight, texture resize)   fog (amount, wibble decay)
#   spatter (mean, std, sigma, threshold, intensity or mud sigma, mud?)   saturate (scale, shift)
#   elastic_transform (alpha, sigma, affine jitter) in pixels
_CIFAR_SIZE = 32
_IMAGENET_ELASTIC_SIZE = 244  # sic: the reference multiplies by 244 (its comment: "should have been 224")

CIFAR_CONSTANTS: dict[str, tuple] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500, 250, 100, 75, 50),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)),
    "motion_blur": ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)),
    "zoom_blur": ((1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)),
    "snow": (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ),
    "frost": ((1, 0.2, 0.2), (1, 0.3, 0.2), (0.9, 0.4, 0.2), (0.85, 0.4, 0.2), (0.75, 0.45, 0.2)),
    "fog": ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "saturate": ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "elastic_transform": tuple(
        (_CIFAR_SIZE * a, _CIFAR_SIZE * s, _CIFAR_SIZE * j)
        for a, s, j in ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
    ),
}

IMAGENET_CONSTANTS: dict[str, tuple] = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),
    "shot_noise": (60, 25, 12, 5, 3),
    "impulse_noise": (0.03, 0.06, 0.09, 0.17, 0.27),
    "speckle_noise": (0.15, 0.2, 0.35, 0.45, 0.6),
    "gaussian_blur": (1, 2, 3, 4, 6),
    "glass_blur": ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)),
    "defocus_blur": ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)),
    "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
    "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
    "snow": (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
        (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
        (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
    ),
    "frost": ((1, 0.4, 1.0), (0.8, 0.6, 1.0), (0.7, 0.7, 1.0), (0.65, 0.7, 1.0), (0.6, 0.75, 1.0)),
    "fog": ((1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4)),
    "spatter": (
        (0.65, 0.3, 4, 0.69, 0.6, 0),
        (0.65, 0.3, 3, 0.68, 0.6, 0),
        (0.65, 0.3, 2, 0.68, 0.5, 0),
        (0.65, 0.3, 1, 0.65, 1.5, 1),
        (0.67, 0.4, 1, 0.65, 1.5, 1),
    ),
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),
    "saturate": ((0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)),
    "jpeg_compression": (25, 18, 15, 10, 7),
    "pixelate": (0.6, 0.5, 0.4, 0.3, 0.25),
    "elastic_transform": tuple(
        (_IMAGENET_ELASTIC_SIZE * a, _IMAGENET_ELASTIC_SIZE * s, _IMAGENET_ELASTIC_SIZE * j)
        for a, s, j in ((2, 0.7, 0.1), (2, 0.08, 0.2), (0.05, 0.01, 0.02), (0.07, 0.01, 0.02), (0.12, 0.01, 0.02))
    ),
}

CONSTANTS: dict[str, dict[str, tuple]] = {"cifar": CIFAR_CONSTANTS, "imagenet": IMAGENET_CONSTANTS}

# Which implementation runs a corruption with the ImageNet table (the CIFAR table always runs ours).
_VIA_CORRUPT_TTA = frozenset({"gaussian_blur", "defocus_blur", "zoom_blur", "jpeg_compression", "pixelate"})
IMAGENET_BACKEND: dict[str, str] = {
    name: ("corrupt_tta" if name in _VIA_CORRUPT_TTA else "robustsoup") for name in CORRUPTIONS
}

_MIN_SIDE = 8
# Fewest pixels per thread's range (about 64 CIFAR images): below that, a thread costs more than it saves.
_CHUNK_PIXELS = 64 * 32 * 32


def constants_for_shape(height: int, width: int) -> str:
    """The constant table for H × W images: ``"cifar"`` for 32 × 32, ``"imagenet"`` for any other size."""
    return "cifar" if (height, width) == (_CIFAR_SIZE, _CIFAR_SIZE) else "imagenet"


def corruption_constants(corruption: str, severity: int, constants: str) -> object:
    """The constants of ``corruption`` at ``severity`` in table ``constants``."""
    return CONSTANTS[_check_constants(constants)][_check_corruption(corruption)][_check_severity(severity) - 1]


def _check_corruption(corruption: str) -> str:
    if corruption not in FAMILIES:
        raise ValueError(f"unknown corruption {corruption!r}; expected one of {', '.join(CORRUPTIONS)}")
    return corruption


def _check_severity(severity: int) -> int:
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    return int(severity)


def _check_constants(constants: str) -> str:
    if constants not in CONSTANT_SETS:
        raise ValueError(f"constants must be one of {CONSTANT_SETS}, got {constants!r}")
    return constants


def _channels_last(shape: tuple[int, ...], layout: str | None) -> bool:
    """Whether an image array of ``shape`` (N, ·, ·, ·) or (·, ·, ·) has its 3 channels last."""
    if layout is not None:
        if layout.upper() not in ("NHWC", "NCHW", "HWC", "CHW"):
            raise ValueError(f"layout must be 'NHWC' or 'NCHW', got {layout!r}")
        return layout.upper().endswith("C")
    last, first = shape[-1] == 3, shape[-3] == 3
    if last and first:
        raise ValueError(f"images of shape {shape} could be NHWC or NCHW; pass layout='NHWC' or 'NCHW'")
    if not (last or first):
        raise ValueError(f"expected RGB images, NHWC (…, H, W, 3) or NCHW (…, 3, H, W), found shape {shape}")
    return last


def _image_generators(seed: int, corruption: str, severity: int, first: int, n: int) -> list[np.random.Generator]:
    key = [int(seed), zlib.crc32(corruption.encode()), int(severity)]
    return [np.random.Generator(np.random.PCG64(np.random.SeedSequence(key, spawn_key=(first + i,)))) for i in range(n)]


def corruption_workers() -> int:
    """Threads :func:`corrupt` uses by default: torch's intra-op threads (a workflow job's ``threads``)."""
    return max(1, torch.get_num_threads())


def _chunks(n: int, workers: int, pixels: int) -> list[slice]:
    """Contiguous image ranges for ``workers`` threads: one range with one worker; otherwise about four
    per worker (for balance), none under ``_CHUNK_PIXELS`` pixels unless that leaves a worker idle."""
    if workers <= 1 or n <= 1:
        return [slice(0, n)]
    pieces = min(n, workers * 4, max(workers, n * pixels // _CHUNK_PIXELS))
    edges = np.linspace(0, n, min(n, pieces) + 1).round().astype(int)
    return [slice(int(a), int(b)) for a, b in itertools.pairwise(edges) if b > a]


def _corrupt_nhwc(
    images: np.ndarray,
    corruption: str,
    severity: int,
    seed: int,
    constants: str | None,
    index_offset: int,
    workers: int,
) -> np.ndarray:
    n, height, width, _ = images.shape
    table = constants_for_shape(height, width) if constants is None else _check_constants(constants)
    if n == 0:
        return images.copy()
    if table == "imagenet" and IMAGENET_BACKEND[corruption] == "corrupt_tta":

        def run(part: np.ndarray, first: int) -> np.ndarray:
            return _corrupt_tta(part, corruption, severity)

    else:
        c = CONSTANTS[table][corruption][severity - 1]
        random = corruption in corruption_ops.RANDOM_OPS

        def run(part: np.ndarray, first: int) -> np.ndarray:
            rngs = _image_generators(seed, corruption, severity, index_offset + first, len(part)) if random else []
            return corruption_ops.OPS[corruption](part, c, rngs)

    chunks = _chunks(n, workers, height * width)
    if len(chunks) == 1:
        return run(images, 0)
    # Every image is corrupted on its own (its own generator, per-image arithmetic), so the threads'
    # ranges give the bytes one call would. NumPy, SciPy, OpenCV and Pillow release the GIL in their loops.
    out = np.empty_like(images)
    with ThreadPoolExecutor(max_workers=min(workers, len(chunks))) as pool:
        done = {pool.submit(run, images[part], part.start): part for part in chunks}
        for future, part in done.items():
            out[part] = future.result()
    return out


def _corrupt_tta(images: np.ndarray, corruption: str, severity: int) -> np.ndarray:
    """Run corrupt-tta's ImageNet-constant implementation image by image (deterministic ones only)."""
    try:
        from corrupt_tta import corruptions as ctta
    except ModuleNotFoundError as exc:
        raise RuntimeError(
            f"{corruption} with the ImageNet constants runs corrupt-tta; install corrupt-tta==0.1.7"
        ) from exc
    function = getattr(ctta, corruption)
    out = np.empty_like(images)
    for i, image in enumerate(images):
        out[i] = np.clip(np.asarray(function(image, severity), dtype=np.float64), 0, 255).astype(np.uint8)
    return out


def corrupt(
    images,
    corruption: str,
    severity: int,
    seed: int = 0,
    *,
    constants: str | None = None,
    layout: str | None = None,
    index_offset: int = 0,
    workers: int | None = None,
):
    """Apply ``corruption`` at ``severity`` (1–5) to uint8 RGB images; return uint8 of the same shape.

    ``images`` is a numpy array or a CPU torch tensor, (N, H, W, 3) or (N, 3, H, W) (or one image
    without N); the layout is detected from where the 3 channels are, or given as ``layout``. The
    result has the input's type, shape and layout. ``constants`` overrides
    :func:`constants_for_shape`. Image i draws from a generator keyed by (``seed``, corruption,
    severity, ``index_offset`` + i), so results do not depend on how a split is chunked, nor on
    ``workers``: the threads that corrupt ranges of the images at once (default
    :func:`corruption_workers`, torch's thread count).
    """
    name = _check_corruption(corruption)
    level = _check_severity(severity)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    as_torch = isinstance(images, torch.Tensor)
    array = images.detach().cpu().numpy() if as_torch else np.asarray(images)
    if array.dtype != np.uint8:
        raise TypeError(f"expected uint8 images (0–255), found dtype {array.dtype}")
    if array.ndim not in (3, 4):
        raise ValueError(f"expected images of shape (N, H, W, 3) or (N, 3, H, W), found shape {array.shape}")
    last = _channels_last(array.shape, layout)
    batch = array if array.ndim == 4 else array[None]
    nhwc = batch if last else batch.transpose(0, 2, 3, 1)
    if min(nhwc.shape[1:3]) < _MIN_SIDE:
        raise ValueError(f"images must be at least {_MIN_SIDE}×{_MIN_SIDE}, found {nhwc.shape[1]}×{nhwc.shape[2]}")
    threads = corruption_workers() if workers is None else int(workers)
    out = _corrupt_nhwc(np.ascontiguousarray(nhwc), name, level, int(seed), constants, int(index_offset), threads)
    if not last:
        out = out.transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(out if array.ndim == 4 else out[0])
    return torch.from_numpy(out) if as_torch else out


def corrupt_groups(
    images,
    groups: Sequence[tuple[Sequence[int], str, int]],
    seed: int = 0,
    *,
    index_offset: int = 0,
    workers: int | None = None,
):
    """Corrupt several groups of one batch at once: ``groups`` lists (rows, corruption, severity).

    Equal, byte for byte, to ``out[rows] = corrupt(images[rows], corruption, severity, seed,
    index_offset=index_offset)`` for each group in turn (rows absent from every group are copied),
    but the groups run on ``workers`` threads together (default :func:`corruption_workers`). A
    training batch drawn over many corruptions and severities has a few images per group, too few
    for :func:`corrupt`'s own threads; this is how on-the-fly corruption uses a machine's cores.
    ``images``: uint8, numpy or a CPU torch tensor, (N, H, W, 3) or (N, 3, H, W).
    """
    threads = corruption_workers() if workers is None else int(workers)
    as_torch = isinstance(images, torch.Tensor)
    array = images.detach().cpu().numpy() if as_torch else np.asarray(images)
    out = array.copy()
    tasks = [(np.asarray(rows, dtype=np.intp), name, level) for rows, name, level in groups if len(rows)]

    def run(task: tuple[np.ndarray, str, int]) -> np.ndarray:
        rows, name, level = task
        return corrupt(array[rows], name, level, seed, index_offset=index_offset, workers=1)

    if threads <= 1 or len(tasks) <= 1:
        results = [corrupt(array[r], c, s, seed, index_offset=index_offset, workers=threads) for r, c, s in tasks]
    else:
        with ThreadPoolExecutor(max_workers=min(threads, len(tasks))) as pool:
            results = list(pool.map(run, tasks))
    for (rows, _, _), result in zip(tasks, results, strict=True):
        out[rows] = result
    return torch.from_numpy(out) if as_torch else out


# ---------------------------------------------------------------- CIFAR-10-C layout on disk


def severity_rows(severity: int, n: int, severities: Sequence[int] = SEVERITIES) -> slice:
    """Rows of ``severity`` in a ``<corruption>.npy`` of ``n`` images per severity."""
    levels = _check_severities(severities)
    if _check_severity(severity) not in levels:
        raise ValueError(f"severity {severity} is not among the written severities {levels}")
    j = levels.index(severity)
    return slice(j * n, (j + 1) * n)


def _check_severities(severities: Iterable[int]) -> tuple[int, ...]:
    levels = tuple(_check_severity(s) for s in severities)
    if not levels or list(levels) != sorted(set(levels)):
        raise ValueError(f"severities must be distinct, increasing and within 1..5, got {levels}")
    return levels


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, array, allow_pickle=False)


def write_corrupted_split(
    images,
    labels,
    out_dir: str | os.PathLike,
    corruptions: Iterable[str] = CORRUPTIONS,
    severities: Iterable[int] = SEVERITIES,
    seed: int = 0,
    *,
    constants: str | None = None,
    chunk_size: int = 2048,
) -> dict[str, Path]:
    """Corrupt uint8 (N, 3, H, W) ``images`` and write them in Hendrycks' CIFAR-10-C layout.

    Writes ``<out_dir>/<corruption>.npy``, uint8 (k·N, H, W, 3) for the k ``severities`` (in
    increasing order; severity s of the default 1..5 is in rows (s−1)·N … s·N − 1), and
    ``<out_dir>/labels.npy``, int64 (k·N,), unless ``labels`` is None. Every file is written
    atomically. Returns the written paths by corruption name (and ``"labels"``).
    """
    names = [_check_corruption(c) for c in corruptions]
    levels = _check_severities(severities)
    array = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, 3, H, W), found {array.dtype} {array.shape}")
    nhwc = np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    n = nhwc.shape[0]
    out_dir = Path(out_dir)
    written: dict[str, Path] = {}
    for name in names:
        out = np.empty((len(levels) * n,) + nhwc.shape[1:], dtype=np.uint8)
        for j, level in enumerate(levels):
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                out[j * n + start : j * n + stop] = corrupt(
                    nhwc[start:stop], name, level, seed, constants=constants, layout="NHWC", index_offset=start
                )
        path = out_dir / f"{name}.npy"
        _save_npy(path, out)
        written[name] = path
    if labels is not None:
        flat = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if flat.shape != (n,):
            raise ValueError(f"expected {n} labels of shape ({n},), found shape {flat.shape}")
        path = out_dir / "labels.npy"
        _save_npy(path, np.tile(flat.astype(np.int64), len(levels)))
        written["labels"] = path
    return written


def _load_npy(path: Path, what: str, mmap: bool) -> np.ndarray:
    if not path.is_file():
        present = sorted(p.name for p in path.parent.glob("*.npy")) if path.parent.is_dir() else []
        raise FileNotFoundError(
            f"corrupted split file {path} does not exist; expected {what} "
            f"(Hendrycks' CIFAR-10-C layout, written by write_corrupted_split); "
            f"found in {path.parent}: {', '.join(present) if present else 'no .npy files'}"
        )
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(
            f"corrupted split file {path} is unreadable or truncated ({_npy_sizes(path)}); expected {what}. "
            "Delete it and rerun (the workflow regenerates it), or copy it again if it came from disk"
        ) from exc


def _npy_sizes(path: Path) -> str:
    """'N bytes on disk, M expected from its header (shape …, dtype …)', or why the header is unreadable."""
    actual = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            shape, _, dtype = read_header(handle)
            expected = handle.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize
    except Exception as exc:  # a header too damaged to read says so
        return f"{actual} bytes on disk, no readable .npy header: {exc}"
    return f"{actual} bytes on disk, {expected} expected from its header (shape {shape}, dtype {dtype})"


def read_corrupted_split(
    directory: str | os.PathLike,
    corruption: str,
    severity: int,
    *,
    severities: Sequence[int] = SEVERITIES,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (uint8 N × 3 × H × W) and labels (int64 N) of one corruption and severity.

    Reads the layout written by :func:`write_corrupted_split` (and Hendrycks' released CIFAR-10-C):
    ``severities`` are the severities the files hold, in row order (all five by default). Fails
    with the expected and the found shape if a file is missing or does not fit.
    """
    name = _check_corruption(corruption)
    levels = _check_severities(severities)
    k = len(levels)
    directory = Path(directory)
    labels = _load_npy(directory / "labels.npy", f"labels.npy, integer labels of shape ({k}·N,)", mmap=False)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or labels.shape[0] % k:
        raise ValueError(
            f"{directory / 'labels.npy'}: expected integer labels of shape ({k}·N,) for {k} severities, "
            f"found {labels.dtype} {labels.shape}"
        )
    n = labels.shape[0] // k
    path = directory / f"{name}.npy"
    images = _load_npy(path, f"{name}.npy, uint8 of shape ({k * n}, H, W, 3) = {k} severities × {n} images", mmap=True)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[0] != k * n or images.shape[-1] != 3:
        raise ValueError(
            f"{path}: expected uint8 of shape ({k * n}, H, W, 3) = {k} severities × {n} images "
            f"(from labels.npy), found {images.dtype} {images.shape}"
        )
    rows = severity_rows(severity, n, levels)
    chw = np.ascontiguousarray(np.asarray(images[rows]).transpose(0, 3, 1, 2))
    return torch.from_numpy(chw), torch.from_numpy(labels[rows].astype(np.int64))


__all__ = [
    "CIFAR_CONSTANTS",
    "CONSTANTS",
    "CONSTANT_SETS",
    "CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "FAMILIES",
    "IMAGENET_BACKEND",
    "IMAGENET_CONSTANTS",
    "SEVERITIES",
    "STANDARD_CORRUPTIONS",
    "constants_for_shape",
    "corrupt",
    "corrupt_groups",
    "corruption_constants",
    "corruption_workers",
    "read_corrupted_split",
    "severity_rows",
    "write_corrupted_split",
]
