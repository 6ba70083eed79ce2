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
import sys
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import CheckpointError, CheckpointMeta, load_checkpoint, save_checkpoint
from ..config import ConfigError
from ..data import DataLayoutError
from ..soups.search import LABEL_FREE_METHODS
from ..weights import StateDict, affine_combination

Loaded = list[tuple[StateDict, CheckpointMeta]]


def check_soup_family(loaded: Loaded) -> None:
    """Raise :class:`CheckpointError` unless the checkpoints can be mixed into one soup: one
    architecture, data set, class count and input normalization (shapes are checked by the mixer)."""
    first = loaded[0][1]
    for _, meta in loaded[1:]:
        if (meta.architecture, meta.model_kwargs) != (first.architecture, first.model_kwargs):
            raise CheckpointError(
                f"{meta.name} is a {meta.architecture} {meta.model_kwargs}, "
                f"{first.name} a {first.architecture} {first.model_kwargs}: soups need one architecture"
            )
        for field in ("dataset", "num_classes", "mean", "std"):
            if getattr(meta, field) != getattr(first, field):
                raise CheckpointError(
                    f"{meta.name} has {field} {getattr(meta, field)!r}, {first.name} {getattr(first, field)!r}: "
                    "the ingredients of a soup must share the data set and the input normalization"
                )


def write_soup(loaded: Loaded, weights: Sequence[float], output: Path, provenance: dict) -> None:
    """Σ wᵢθᵢ of the checkpoints (the one mixer) saved at ``output`` with the first one's sidecar,
    renamed, untrained, with ``provenance``."""
    names = [meta.name for _, meta in loaded]
    soup = affine_combination([state for state, _ in loaded], list(weights), names=names)
    meta = loaded[0][1]
    meta.name = output.stem
    meta.training, meta.parent, meta.metrics = None, None, {}
    meta.provenance = provenance
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

    try:
        spec = get_dataset_spec(meta.dataset)
    except KeyError as error:
        raise CheckpointError(f"{meta.name}: {error.args[0]}; cannot tell how to size its images") from None
    paths = image_files(folder)
    if max_images:
        paths = paths[:max_images]
    source = FileSource(paths, torch.zeros(len(paths), dtype=torch.int64), spec.resolution, spec.resize)
    return source.load(range(len(paths))), spec


def cmd_soup_for(args: argparse.Namespace) -> int:
    import torch

    from ..config import resolve_config
    from ..device import Arithmetic, select_device
    from ..soups.search import SoupScorer, batchnorm_layers, choose_without_labels, simplex_grid

    defaults = resolve_config({})["soups"]["search"]
    step = args.step if args.step is not None else defaults["step"]
    extend = args.extend if args.extend is not None else defaults["extend"]
    threshold = args.threshold if args.threshold is not None else defaults["fallback_threshold"]
    if not 0 <= threshold <= 1:
        raise ConfigError(f"--threshold: expected a fraction of the images between 0 and 1, found {threshold:g}")
    if extend < 0:
        raise ConfigError(f"--extend: expected 0 or more (how far weights may go below 0), found {extend:g}")
    if args.max_images < 0:
        raise ConfigError(f"--max-images: expected 0 (all) or a positive count, found {args.max_images}")
    if len(args.models) < 2:
        raise CheckpointError(f"soup-for needs at least two checkpoints of one soup family; got {len(args.models)}")
    loaded = [load_checkpoint(path) for path in args.models]
    check_soup_family(loaded)
    names = [meta.name for _, meta in loaded]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise CheckpointError(f"checkpoints share the name(s) {repeated}: give each base model once")
    fallback = None
    if args.fallback is not None:
        by_path = {str(Path(p)): n for p, n in zip(args.models, names)}
        fallback = by_path.get(str(Path(args.fallback)), args.fallback)
        if fallback not in names:
            raise CheckpointError(f"--fallback {args.fallback!r} is none of the checkpoints given ({names})")
    try:
        grid = [dict(zip(names, w)) for w in simplex_grid(len(names), step, extend)]
    except ValueError as error:
        raise ConfigError(f"--step: {error}") from None
    meta = loaded[0][1]
    images, spec = read_unlabelled(args.folder, meta, args.max_images)
    device = select_device(args.device)
    scorer = SoupScorer(meta.build(), [s for s, _ in loaded], names, device=device, arithmetic=Arithmetic())
    methods = list(LABEL_FREE_METHODS)
    if not batchnorm_layers(scorer.net):
        methods = [m for m in methods if not LABEL_FREE_METHODS[m].needs_batchnorm]
        if args.method not in methods:
            raise CheckpointError(
                f"--method {args.method} compares BatchNorm statistics, but {meta.architecture} has no BatchNorm "
                f"layer; choose one of {methods}"
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
        print(
            f"robustsoup: warning: the label-free picks disagree on {choice.disagreement[args.method]:.1%} of the "
            f"images (threshold {threshold:.1%}): the {args.method} pick may not beat the best base model; {advice}",
            file=sys.stderr,
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


def add_soup_for_command(commands) -> None:
    """Register ``soup-for`` on the top-level subparsers."""
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
        default="agreement",
        help="which label-free pick to write (default: agreement)",
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
    soup_for.set_defaults(run=cmd_soup_for)
