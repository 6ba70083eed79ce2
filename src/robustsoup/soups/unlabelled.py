"""``soup-for``'s soup for a folder of unlabelled images (:func:`soup_for`, every step in order): the
images read as the checkpoints' data set is, the warning when they look unlike it, the scorer and the
label-free methods that apply to it, and which weights to write when the picks disagree. The command line
(:mod:`robustsoup.cli.soups`) parses the arguments, calls :func:`soup_for` and prints its :class:`SoupFor`."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointError, CheckpointMeta, load_checkpoint
from ..config import schema_defaults
from ..data import DataLayoutError, FileSource, get_dataset_spec
from ..data.imagefolder import spec_from_sidecar
from ..data.sources import IMAGE_EXTENSIONS
from ..device import Arithmetic
from ..errors import ConfigError
from ..lineage import check_related
from .choice import LabelFreeChoice, choose_without_labels
from .grid import simplex_grid
from .mixing import Loaded, check_soup_family, write_soup
from .search import LABEL_FREE_METHODS, SoupScorer, batchnorm_layers

DEFAULT_METHOD = "bn_distance"  # the one label-free pick the README's digits measurement finds safe


def image_files(folder: Path) -> list[Path]:
    """Every image file under ``folder`` (any depth, any extension the data readers take),
    sorted; hidden files and folders skipped. Clear errors for a missing or empty folder."""
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


@dataclass(frozen=True)
class SoupFor:
    """What :func:`soup_for` chose and wrote: the base models in the given order, the images scored, the
    grid, every label-free method's pick (``choice``), the weights written (in ``names`` order) and whether
    they fall back (the picks disagree beyond ``threshold``; ``fallback`` the base model written then, if
    one was given)."""

    names: list[str]
    folder: Path
    images: int
    resolution: int
    dataset: str
    grid_size: int
    step: float
    extend: float
    method: str
    threshold: float
    choice: LabelFreeChoice
    weights: list[float]
    falls_back: bool
    fallback: str | None

    @property
    def chosen(self):
        """The written method's pick (a :class:`~robustsoup.soups.search.Selection`)."""
        return self.choice.selections[self.method]


def soup_for(
    folder: Path,
    models: Sequence[Path],
    output: Path,
    *,
    method: str = DEFAULT_METHOD,
    step: float | None = None,
    extend: float | None = None,
    threshold: float | None = None,
    fallback: str | Path | None = None,
    max_images: int = 1000,
    device: torch.device | str = "cpu",
    trust_unverified: bool = False,
    allow_unrelated: bool = False,
    advice: str = "",
    warn: Callable[[str], None] | None = None,
) -> SoupFor:
    """The soup of the checkpoints ``models`` chosen for the unlabelled images in ``folder`` and written
    at ``output`` (``robustsoup soup-for``): the checkpoints loaded and checked as one soup family of related
    models, the simplex grid (``step``, ``extend``; the schema's ``soups.search`` where None), the first
    ``max_images`` images (0: all) read as the models' data set is, every label-free method on one shared
    pass, ``method``'s pick written through the one mixer, or the base model ``fallback`` (a name or one of
    ``models``' paths) when the picks disagree on more than ``threshold`` of the images. ``warn`` hears what
    the caller should know (images unlike the models' data, unverified or unrelated checkpoints);
    ``advice`` says how to mix unrelated models anyway. Bad settings raise :class:`ConfigError` naming
    the command's flag; nothing is written unless every step succeeds."""
    defaults = schema_defaults("soups", "search")
    step = step if step is not None else defaults["step"]
    extend = extend if extend is not None else defaults["extend"]
    threshold = threshold if threshold is not None else defaults["fallback_threshold"]
    if not 0 <= threshold <= 1:
        raise ConfigError(
            f"--threshold: expected a fraction of the images between 0 and 1, found {threshold:g}; e.g. --threshold 0.1"
        )
    if extend < 0:
        raise ConfigError(
            f"--extend: expected 0 or more (how far weights may go below 0), found {extend:g}; e.g. --extend 0.2"
        )
    if max_images < 0:
        raise ConfigError(
            f"--max-images: expected 0 (all) or a positive count, found {max_images}; e.g. --max-images 1000"
        )
    image_files(folder)  # a missing or empty folder fails before any checkpoint is read
    loaded = [load_checkpoint(path, trust_unverified=trust_unverified, warn=warn) for path in models]
    check_soup_family(loaded)
    check_related([m for _, m in loaded], "soup-for", allow_unrelated, advice, warn)
    names = [meta.name for _, meta in loaded]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CheckpointError(f"checkpoints share the name(s) {repeated}: give each base model once")
    fallback_name = None
    if fallback is not None:
        by_path = {str(Path(p)): n for p, n in zip(models, names)}
        fallback_name = by_path.get(str(Path(fallback)), str(fallback))
        if fallback_name not in names:
            raise ConfigError(
                f"--fallback {str(fallback)!r} is none of the checkpoints given ({names}); name one of them, by "
                "name or by path"
            )
    try:
        grid = [dict(zip(names, w)) for w in simplex_grid(len(names), step, extend)]
    except ValueError as error:
        raise ConfigError(
            f"--step {step:g}: {error}; expected a grid spacing in (0, 1] that divides 1, e.g. --step 0.1"
        ) from None
    meta = loaded[0][1]
    images, spec = read_unlabelled(folder, meta, max_images)
    for problem in distribution_problems(folder, images, spec, meta, max_images):
        if warn is not None:
            warn(problem)
    scorer, methods = label_free_scorer(loaded, device)
    if method not in methods:  # only where the model has no BatchNorm layer
        asked = f"--method {method}" if method != DEFAULT_METHOD else f"the default, {DEFAULT_METHOD},"
        raise ConfigError(
            f"{asked} compares BatchNorm statistics, but {meta.architecture} has no BatchNorm layer; pass "
            f"--method with one of {methods} (the README finds only {DEFAULT_METHOD} safe on digits)"
        )
    with torch.no_grad():
        choice = choose_without_labels(scorer, grid, scorer.prepare(images), methods, threshold)
    weights, falls_back = written_weights(choice, method, names, fallback_name)
    fell_back_to = fallback_name if falls_back and fallback_name else None
    provenance = soup_for_provenance(
        folder, len(images), method, choice, threshold, dict(zip(names, weights)), fell_back_to
    )
    result = SoupFor(
        names=names,
        folder=folder,
        images=len(images),
        resolution=spec.resolution,
        dataset=meta.dataset,
        grid_size=len(grid),
        step=step,
        extend=extend,
        method=method,
        threshold=threshold,
        choice=choice,
        weights=weights,
        falls_back=falls_back,
        fallback=fallback_name,
    )
    write_soup(loaded, weights, output, provenance)  # renames the first sidecar: the result is taken before
    return result
