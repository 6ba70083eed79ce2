"""The embedded default: scikit-learn's 8×8 digits, resized to 32×32 RGB.

1,797 images in 10 classes, shipped inside scikit-learn, so the whole
pipeline runs offline with no download.
"""

from __future__ import annotations

import lazy_loader

from .registry import DatasetSpec, TrainAugmentation, register_dataset

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

DIGITS_RESOLUTION = 32


def read_digits(root: object = None, resolution: int = DIGITS_RESOLUTION) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as uint8 (N, 3, resolution, resolution) images and int64 labels.

    ``root`` is ignored: the digits ship inside scikit-learn (no data root).

    The 17 grey levels (0–16) are scaled to [0,1], upsampled bilinearly and
    repeated over three channels.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    grey = torch.as_tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    big = torch.nn.functional.interpolate(grey, size=(resolution, resolution), mode="bilinear", align_corners=False)
    images = (big.clamp(0, 1) * 255).round().to(torch.uint8).repeat(1, 3, 1, 1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return images.contiguous(), labels


register_dataset(
    DatasetSpec(
        name="digits",
        num_classes=10,
        resolution=DIGITS_RESOLUTION,
        # Statistics of the 1,797 resized images (grey, so equal per channel).
        mean=(0.3052, 0.3052, 0.3052),
        std=(0.3236, 0.3236, 0.3236),
        description="scikit-learn digits (1,797 images, 8×8 upsampled to 32×32 RGB)",
        reader=read_digits,
        split_scheme="stratified",
        nominal_sizes={"all": 1797},
        needs_root=False,
        layout="  (none: the digits ship inside scikit-learn)",
        # The references' pad-4 crop without their flip.
        augmentation=TrainAugmentation(
            crop="pad",
            padding=4,
            flip=False,
            why="digits are not mirror-symmetric: a flipped 2, 3, 4, 5, 7 or 9 is no digit",
        ),
        # Radii that separate the models on these easy 32×32 images (larger than CIFAR's).
        threats={"Linf": 0.1, "L2": 3.0, "L1": 24.0},
    )
)
