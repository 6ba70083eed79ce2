"""Golden CIFAR-10-C corruptions from hendrycks/robustness (``ImageNet-C/create_c/make_cifar_c.py``).

Usage: ``python tools/parity/gen_hendrycks_robustness.py CHECKOUT [--commit SHA]``. Writes
``tests/parity/golden/hendrycks_robustness_cifar_c.npz``: four fixed 32×32 RGB images (``images``),
and for each of the 19 corruptions at severities 1, 3 and 5 the reference's uint8 output
(``<corruption>_s<severity>``, shape (4, 32, 32, 3)). Image i of corruption c at severity s is
corrupted right after ``np.random.seed(seeds[c, s, i])`` (``seeds`` is stored too), so the parity
test can feed the same draws to robustsoup's operations through a ``RandomState``. Needs
ImageMagick's MagickWand library and the ``Wand`` package (generation only, see the README).

The reference runs at today's library versions through these run-time shims, applied here and
nowhere else (the checkout is not modified):

- only the part of ``make_cifar_c.py`` above ``import collections`` is executed: the rest is the
  script's loop over CIFAR-10 at hard-coded paths (``/share/data/…``);
- ``np.float_`` (removed in NumPy 2) is ``np.float64``;
- ``np.fromstring(blob, np.uint8)`` (binary mode removed in NumPy 2) is ``np.frombuffer``;
- ``skimage.filters.gaussian(..., multichannel=True)`` (removed in scikit-image 0.19) is
  ``channel_axis=-1``;
- ``skimage.util.random_noise`` no longer draws from NumPy's global state (scikit-image ≥ 0.19 takes
  a ``rng``): it gets ``np.random.default_rng(seed)`` with the image's seed, and the parity test
  gives robustsoup's impulse_noise that same generator;
- the frost textures are opened relative to the working directory, so each call runs with the
  working directory at ``ImageNet-C/create_c``.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from golden_io import GOLDEN_DIR, add_checkout_to_path, checkout_arguments, provenance, save_npz

REPOSITORY = "hendrycks/robustness"
SCRIPT_FILE = "make_cifar_c.py"
STOP_AT = "import collections"
# the reference's function names, in robustsoup's order (15 standard, then the 4 extra)
CORRUPTIONS = (
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
    "speckle_noise",
    "gaussian_blur",
    "spatter",
    "saturate",
)
SEVERITIES = (1, 3, 5)
N_IMAGES = 4
_current = {"seed": 0}


def fixed_images() -> np.ndarray:
    """Four 32×32 RGB uint8 images: smooth gradients, a bright and a dark block, a checkerboard, mild noise."""
    rng = np.random.RandomState(2024)
    yy, xx = np.mgrid[0:32, 0:32] / 31.0
    images = []
    for i in range(N_IMAGES):
        base = np.stack([0.2 + 0.6 * xx, 0.3 + 0.5 * yy, 0.5 + 0.4 * np.sin(3 * xx + 2 * yy + i)], axis=-1) * 255
        base[4 + i : 12 + i, 6:14] = [250, 245, 240]
        base[20:28, 18 + i : 26 + i] = [10, 15, 5]
        base[14:18, 2:30] = 255 * ((np.arange(2, 30) // 2 + i) % 2)[None, :, None]
        base += rng.normal(0, 6, base.shape)
        images.append(np.clip(base, 0, 255).astype(np.uint8))
    return np.stack(images)


def seed_for(c: int, severity: int, i: int) -> int:
    return 10_000 + 100 * c + 10 * severity + i


def _install_shims() -> None:
    import skimage.filters
    import skimage.util

    np.float_ = np.float64
    np.fromstring = lambda data, dtype=float, *a, **k: np.frombuffer(data, dtype)

    gaussian = skimage.filters.gaussian

    def gaussian_multichannel(image, *args, multichannel=None, **kwargs):
        if multichannel:
            kwargs["channel_axis"] = -1
        return gaussian(image, *args, **kwargs)

    skimage.filters.gaussian = gaussian_multichannel
    random_noise = skimage.util.random_noise

    def random_noise_seeded(image, *args, **kwargs):
        kwargs.setdefault("rng", np.random.default_rng(_current["seed"]))
        return random_noise(image, *args, **kwargs)

    skimage.util.random_noise = random_noise_seeded


def load_reference(folder: Path) -> dict:
    """Execute make_cifar_c.py up to its data loop; return its namespace (the corruption functions)."""
    path = folder / SCRIPT_FILE
    source = path.read_text()
    if STOP_AT not in source:
        sys.exit(f"{path} has no line {STOP_AT!r}: not the make_cifar_c.py this script was written for")
    namespace = {"__name__": "make_cifar_c", "__file__": str(path)}
    exec(compile(source[: source.index(STOP_AT)], str(path), "exec"), namespace)
    return namespace


def main() -> None:
    checkout, commit = checkout_arguments(__doc__.splitlines()[0], "hendrycks/robustness")
    folder = add_checkout_to_path(checkout, "ImageNet-C", "create_c")
    _install_shims()
    from PIL import Image

    reference = load_reference(folder)
    images = fixed_images()
    arrays = {"images": images}
    seeds = np.zeros((len(CORRUPTIONS), max(SEVERITIES) + 1, N_IMAGES), dtype=np.int64)
    for c, name in enumerate(CORRUPTIONS):
        function = reference[name]
        for severity in SEVERITIES:
            outputs = []
            for i, image in enumerate(images):
                seed = seed_for(c, severity, i)
                seeds[c, severity, i] = seed
                _current["seed"] = seed
                np.random.seed(seed)
                with contextlib.chdir(folder):
                    out = function(Image.fromarray(image), severity)
                # the reference's own conversion (make_cifar_c.py's loop: np.uint8(corruption(img)))
                outputs.append(np.uint8(out))
            arrays[f"{name}_s{severity}"] = np.stack(outputs)
    arrays["seeds"] = seeds
    meta = provenance(REPOSITORY, commit, __file__) | {
        "file": f"ImageNet-C/create_c/{SCRIPT_FILE}",
        "corruptions": list(CORRUPTIONS),
        "severities": list(SEVERITIES),
        "seeds": "np.random.seed(seeds[c, s, i]) before image i of corruption c at severity s",
    }
    save_npz(GOLDEN_DIR / "hendrycks_robustness_cifar_c.npz", arrays, meta)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
