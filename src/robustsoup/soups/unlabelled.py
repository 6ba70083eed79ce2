"""``soup-for``'s soup for a folder of unlabelled images: the images read as the checkpoints' data set is,
the warning when they look unlike it, the scorer and the label-free methods that apply to it, and which
weights to write when the picks disagree. The command line (:mod:`robustsoup.cli.soups`) parses the
arguments, prints, and calls these."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..checkpoint import CheckpointError, CheckpointMeta
from ..data import DataLayoutError
from ..device import Arithmetic
from .choice import LabelFreeChoice
from .mixing import Loaded
from .search import LABEL_FREE_METHODS, SoupScorer, batchnorm_layers

DEFAULT_METHOD = "bn_distance"  # the one label-free pick the README's digits measurement finds safe


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth, any extension the data readers take),
    sorted; hidden files and folders skipped. Clear errors for a missing or empty folder."""
    from ..data.sources import IMAGE_EXTENSIONS

    if not folder.is_dir():
        raise DataLayoutError(f"image folder {folder} does not exist or is not a folder; give a folder of images")
    found, others = [], 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(root) / name)
            else:
                others += 1
    if not found:
        raise DataLayoutError(
            f"image folder {folder} holds no image files ({others} other file(s)); expected images with one of "
            f"the extensions {', '.join(IMAGE_EXTENSIONS)}, at any depth"
        )
    return sorted(found)


def read_unlabelled(folder: Path, meta: CheckpointMeta, max_images: int):
    """The first ``max_images`` images of ``folder`` (0: all) as uint8 (N, 3, R, R), decoded, resized
    and centre-cropped as the checkpoints' data set is (:func:`robustsoup.data.decode_image`)."""
    import torch

    from ..data import FileSource, get_dataset_spec
    from ..data.imagefolder import spec_from_sidecar

    try:
        spec = get_dataset_spec(meta.dataset)
    except KeyError as error:  # an ImageFolder's name (data.name): its sidecar says how to size the images
        spec = spec_from_sidecar(meta.dataset, meta.num_classes, meta.mean, meta.std, meta.provenance)
        if spec is None:
            raise CheckpointError(f"{meta.name}: {error.args[0]}; cannot tell how to size its images") from None
    paths = image_files(folder)
    if max_images:
        paths = paths[:max_images]
    source = FileSource(paths, torch.zeros(len(paths), dtype=torch.int64), spec.resolution, spec.resize)
    return source.load(range(len(paths))), spec


# Thresholds of the out-of-distribution warning, set so that none of the 19 corruptions at severity 5 of
# the digits test images warns (a corruption shift is what soup-for is for; measured: mean at most 0.85
# data stds away (brightness), spread down to 0.19 of the data's (contrast), tint up to 0.063 (frost,
# saturate)) while 32-px crops of colour photographs do (tint 0.19) for digits models.
RESOLUTION_FACTOR = 2.0  # median native short side beyond ×2 or ÷2 of the training resolution
MEAN_SHIFT = 1.0  # |image mean − data mean| in units of the data's std, any channel
STD_RANGE = (1 / 8, 2.0)  # image std / data std, any channel
TINT = 0.12  # per-image |mean R − mean G| + |mean G − mean B| (pixels in [0,1]) on models of grey data


def distribution_problems(folder: Path, images, spec, meta: CheckpointMeta, max_images: int) -> list[str]:
    """Why ``images`` (uint8, N×3×R×R, as the models see them) look unlike the models' training data:
    native sides far from the training resolution, per-channel mean or spread far from the data set's
    statistics (the sidecar's normalization), or colour where the data set is grey. Empty if none."""
    from PIL import Image

    problems = []
    sides = []
    for path in image_files(folder)[: max_images or None][:200]:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except OSError:
            continue
    if sides:
        side = sorted(sides)[len(sides) // 2]
        if not spec.resolution / RESOLUTION_FACTOR <= side <= spec.resolution * RESOLUTION_FACTOR:
            problems.append(
                f"the images in {folder} are {side} px on their short side (median), the models were trained at "
                f"{spec.resolution} px ({meta.dataset}): resizing this far changes what the models see, so the "
                "pick may not transfer; give images of the shift at about the training resolution"
            )
    pixels = images.float().div(255)
    flat = pixels.transpose(0, 1).reshape(3, -1)
    mean, std = flat.mean(1).tolist(), flat.std(1).tolist()
    far = [
        c
        for c in range(3)
        if abs(mean[c] - meta.mean[c]) > MEAN_SHIFT * meta.std[c]
        or not STD_RANGE[0] <= std[c] / meta.std[c] <= STD_RANGE[1]
    ]
    channel_means = pixels.mean((2, 3))
    tint = float(
        ((channel_means[:, 0] - channel_means[:, 1]).abs() + (channel_means[:, 1] - channel_means[:, 2]).abs()).mean()
    )
    coloured = len(set(meta.mean)) == 1 and len(set(meta.std)) == 1 and tint > TINT
    if far or coloured:
        found = ", ".join(f"{m:.2f}±{s:.2f}" for m, s in zip(mean, std))
        data = ", ".join(f"{m:.2f}±{s:.2f}" for m, s in zip(meta.mean, meta.std))
        what = f"colour images (tint {tint:.2f}) where the data set is grey; " if coloured else ""
        problems.append(
            f"the images in {folder} do not look like {meta.dataset}: {what}per-channel pixel mean±std {found}, "
            f"the models' data {data}. The models may be out of their distribution, where no soup of them is "
            "reliable; check that the folder holds the shift these models are meant for"
        )
    return problems


def label_free_scorer(loaded: Loaded, device) -> tuple[SoupScorer, list[str]]:
    """The in-place scorer of the checkpoints' soups, and the label-free methods that apply to its model (those
    comparing BatchNorm statistics only where it has BatchNorm layers)."""
    meta = loaded[0][1]
    scorer = SoupScorer(
        meta.build(), [s for s, _ in loaded], [m.name for _, m in loaded], device=device, arithmetic=Arithmetic()
    )
    methods = list(LABEL_FREE_METHODS)
    if not batchnorm_layers(scorer.net):
        methods = [m for m in methods if not LABEL_FREE_METHODS[m].needs_batchnorm]
    return scorer, methods


def written_weights(choice: LabelFreeChoice, method: str, names: Sequence[str], fallback: str | None):
    """(the weights to write, in ``names`` order; whether the pick falls back): the ``method`` pick, or the
    base model ``fallback`` (where one is given) when the picks disagree beyond the threshold."""
    chosen = choice.selections[method]
    falls_back = choice.fallback(method)
    if falls_back and fallback:
        return [1.0 if n == fallback else 0.0 for n in names], True
    return [chosen.weights[n] for n in names], falls_back


def soup_for_provenance(
    folder: Path, images: int, method: str, choice: LabelFreeChoice, threshold: float, weights: Mapping, fell_back_to
) -> dict:
    """The written soup's provenance: its weights and how ``soup-for`` chose them."""
    chosen = choice.selections[method]
    return {
        "soup": dict(weights),
        "soup_for": {
            "folder": str(folder),
            "images": images,
            "method": method,
            "pick": dict(chosen.weights),
            "disagreement": choice.disagreement[method],
            "threshold": threshold,
            "fell_back_to": fell_back_to,
            "forward_passes": chosen.forward_passes,
        },
    }
