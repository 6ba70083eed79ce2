"""``robustsoup soup-for``: a soup for unlabelled images, and the soup writer ``soup`` shares.

    robustsoup soup-for FOLDER A.safetensors B.safetensors C.safetensors D.safetensors -o SOUP.safetensors

``soup-for`` chooses the soup for a distribution shift from a folder of *unlabelled* images: it
scores the simplex grid of the checkpoints with the label-free methods of
:mod:`robustsoup.soups.search` (entropy, ensemble agreement, BatchNorm statistics, information
maximization), prints every method's pick and the safety signal (how much the picks disagree),
and writes the chosen soup through the same mixer as ``soup`` and the workflow's ``make_soup``
(:func:`robustsoup.weights.affine_combination`). Wired into :mod:`robustsoup.cli` by
:func:`add_soup_for_command`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from ..config import ConfigError
from ..data import DataLayoutError
from ..data.imagefolder import SIDECAR_KEYS
from ..lineage import CLI_ADVICE, check_related, mixed
from ..soups.search import LABEL_FREE_METHODS
from ..weights import StateDict, affine_combination
from .args import UsageError, check_output, parse_device, warn

DEFAULT_METHOD = "bn_distance"  # the one label-free pick the README's digits measurement finds safe

Loaded = list[tuple[StateDict, CheckpointMeta]]


def check_soup_family(loaded: Loaded) -> None:
    """Raise :class:`CheckpointError` unless the checkpoints can be mixed into one soup: one
    architecture, data set, class count and input normalization (shapes are checked by the mixer)."""
    first = loaded[0][1]
    for _, meta in loaded[1:]:
        if (meta.architecture, meta.model_kwargs) != (first.architecture, first.model_kwargs):
            raise CheckpointError(
                f"{meta.name} is a {meta.architecture} {meta.model_kwargs}, "
                f"{first.name} a {first.architecture} {first.model_kwargs}: soups need one architecture; choose "
                "checkpoints fine-tuned from one model"
            )
        for field in ("dataset", "num_classes", "mean", "std"):
            if getattr(meta, field) != getattr(first, field):
                raise CheckpointError(
                    f"{meta.name} has {field} {getattr(meta, field)!r}, {first.name} {getattr(first, field)!r}: "
                    "the ingredients of a soup must share the data set and the input normalization; choose "
                    "checkpoints fine-tuned from one model"
                )


def write_soup(loaded: Loaded, weights: Sequence[float], output: Path, provenance: dict) -> None:
    """Σ wᵢθᵢ of the checkpoints (the one mixer) saved at ``output`` with the first one's sidecar,
    renamed, untrained, with ``provenance``."""
    names = [meta.name for _, meta in loaded]
    soup = affine_combination([state for state, _ in loaded], list(weights), names=names)
    lineage = mixed([m for _, m in loaded])
    meta = loaded[0][1]
    meta.name = output.stem
    meta.training, meta.parent, meta.metrics, meta.lineage = None, None, {}, lineage
    meta.provenance = {k: meta.provenance[k] for k in SIDECAR_KEYS if k in meta.provenance}
    meta.provenance.update(provenance)  # an ImageFolder's classes and resolution stay with the soup
    meta.git_commit = meta.created = meta.weights_sha256 = ""
    save_checkpoint(output, soup, meta)


def _mixture(names: Sequence[str], weights: Sequence[float]) -> str:
    return " + ".join(f"{w:g}·{n}" for n, w in zip(names, weights) if w != 0)


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


def cmd_soup_for(args: argparse.Namespace) -> int:
    import torch

    from ..config import resolve_config
    from ..device import Arithmetic
    from ..soups.search import SoupScorer, batchnorm_layers, choose_without_labels, simplex_grid

    defaults = resolve_config({})["soups"]["search"]
    step = args.step if args.step is not None else defaults["step"]
    extend = args.extend if args.extend is not None else defaults["extend"]
    threshold = args.threshold if args.threshold is not None else defaults["fallback_threshold"]
    if not 0 <= threshold <= 1:
        raise ConfigError(
            f"--threshold: expected a fraction of the images between 0 and 1, found {threshold:g}; e.g. --threshold 0.1"
        )
    if extend < 0:
        raise ConfigError(
            f"--extend: expected 0 or more (how far weights may go below 0), found {extend:g}; e.g. --extend 0.2"
        )
    if args.max_images < 0:
        raise ConfigError(
            f"--max-images: expected 0 (all) or a positive count, found {args.max_images}; e.g. --max-images 1000"
        )
    if len(args.models) < 2:
        raise UsageError(
            f"soup-for needs at least two checkpoints of one soup family (MODEL MODEL …); got {len(args.models)}"
        )
    check_output("-o", args.output, args.models)
    device = parse_device(args.device)
    image_files(args.folder)  # a missing or empty folder fails before any checkpoint is read
    loaded = [load_checkpoint(path, trust_unverified=args.trust_unverified, warn=warn) for path in args.models]
    check_soup_family(loaded)
    check_related([m for _, m in loaded], "soup-for", args.allow_unrelated, CLI_ADVICE, warn)
    names = [meta.name for _, meta in loaded]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CheckpointError(f"checkpoints share the name(s) {repeated}: give each base model once")
    fallback = None
    if args.fallback is not None:
        by_path = {str(Path(p)): n for p, n in zip(args.models, names)}
        fallback = by_path.get(str(Path(args.fallback)), args.fallback)
        if fallback not in names:
            raise UsageError(
                f"--fallback {args.fallback!r} is none of the checkpoints given ({names}); name one of them, by name "
                "or by path"
            )
    try:
        grid = [dict(zip(names, w)) for w in simplex_grid(len(names), step, extend)]
    except ValueError as error:
        raise ConfigError(
            f"--step {step:g}: {error}; expected a grid spacing in (0, 1] that divides 1, e.g. --step 0.1"
        ) from None
    meta = loaded[0][1]
    images, spec = read_unlabelled(args.folder, meta, args.max_images)
    for problem in distribution_problems(args.folder, images, spec, meta, args.max_images):
        warn(problem)
    scorer = SoupScorer(meta.build(), [s for s, _ in loaded], names, device=device, arithmetic=Arithmetic())
    methods = list(LABEL_FREE_METHODS)
    if not batchnorm_layers(scorer.net):
        methods = [m for m in methods if not LABEL_FREE_METHODS[m].needs_batchnorm]
        if args.method not in methods:
            asked = f"--method {args.method}" if args.method != DEFAULT_METHOD else f"the default, {DEFAULT_METHOD},"
            raise UsageError(
                f"{asked} compares BatchNorm statistics, but {meta.architecture} has no BatchNorm layer; pass "
                f"--method with one of {methods} (the README finds only {DEFAULT_METHOD} safe on digits)"
            )
    with torch.no_grad():
        choice = choose_without_labels(scorer, grid, scorer.prepare(images), methods, threshold)
    print(
        f"{len(images)} images from {args.folder} ({spec.resolution} px, as {meta.dataset}); "
        f"{len(grid)} soups of {', '.join(names)} (step {step:g}, extend {extend:g})"
    )
    for method, selection in choice.selections.items():
        mark = "*" if method == args.method else " "
        print(
            f"{mark} {method:<12} {_mixture(names, [selection.weights[n] for n in names]):<50} "
            f"score {selection.details['score']:.4f}  disagreement {choice.disagreement[method]:.3f}"
        )
    chosen = choice.selections[args.method]
    weights = [chosen.weights[n] for n in names]
    falls_back = choice.fallback(args.method)
    if falls_back:
        if not fallback:
            advice = "writing the pick anyway (pass --fallback MODEL to write a base model instead)"
        elif chosen.weights[fallback] == 1.0:
            advice = f"the pick is the fallback {fallback} already"
        else:
            advice = f"writing the fallback {fallback} instead"
        warn(
            f"the label-free picks disagree on {choice.disagreement[args.method]:.1%} of the "
            f"images (threshold {threshold:.1%}): the {args.method} pick may not beat the best base model; {advice}"
        )
        if fallback:
            weights = [1.0 if n == fallback else 0.0 for n in names]
    provenance = {
        "soup": dict(zip(names, weights)),
        "soup_for": {
            "folder": str(args.folder),
            "images": len(images),
            "method": args.method,
            "pick": dict(chosen.weights),
            "disagreement": choice.disagreement[args.method],
            "threshold": threshold,
            "fell_back_to": fallback if falls_back and fallback else None,
            "forward_passes": chosen.forward_passes,
        },
    }
    write_soup(loaded, weights, args.output, provenance)
    print(f"wrote {args.output} = {_mixture(names, weights)} ({chosen.forward_passes} forward passes)")
    return 0


def add_soup_for_command(commands, add_lineage_flags) -> None:
    """Register ``soup-for`` on the top-level subparsers (``add_lineage_flags`` adds --allow-unrelated and
    --trust-unverified, as on ``soup``)."""
    soup_for = commands.add_parser(
        "soup-for",
        help="choose and write a soup of checkpoints for a folder of unlabelled images (label-free selection)",
    )
    soup_for.add_argument("folder", type=Path, help="folder of unlabelled images (any depth, any image format)")
    soup_for.add_argument("models", nargs="+", type=Path, metavar="MODEL", help="checkpoints of one soup family")
    soup_for.add_argument("-o", "--output", type=Path, required=True, help="output .safetensors (+ .json sidecar)")
    soup_for.add_argument(
        "--method",
        choices=list(LABEL_FREE_METHODS),
        default=DEFAULT_METHOD,
        help=f"which label-free pick to write (default: {DEFAULT_METHOD}, the only one the README's measurement "
        "on digits finds safe)",
    )
    soup_for.add_argument(
        "--step", type=float, default=None, help="grid spacing (default: the schema's soups.search.step)"
    )
    soup_for.add_argument("--extend", type=float, default=None, help="extrapolation below 0 (soups.search.extend)")
    soup_for.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="disagreement above which the pick is not trusted (soups.search.fallback_threshold)",
    )
    soup_for.add_argument(
        "--fallback", default=None, metavar="MODEL", help="checkpoint (name or path) to write when not trusted"
    )
    soup_for.add_argument(
        "--max-images", type=int, default=1000, help="use the first N images in name order (default 1000; 0: all)"
    )
    soup_for.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    add_lineage_flags(soup_for)
    soup_for.set_defaults(run=cmd_soup_for)
