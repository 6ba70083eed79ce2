"""``robustsoup soup-for``: a soup for unlabelled images (its arguments, messages and output; the work is
:mod:`robustsoup.soups.unlabelled`'s and :mod:`robustsoup.soups.mixing`'s).

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
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import CheckpointError, load_checkpoint
from ..config import ConfigError
from ..lineage import CLI_ADVICE, check_related
from ..soups.mixing import check_soup_family, write_soup
from ..soups.search import LABEL_FREE_METHODS
from ..soups.unlabelled import (
    DEFAULT_METHOD,
    distribution_problems,
    image_files,
    label_free_scorer,
    read_unlabelled,
    soup_for_provenance,
    written_weights,
)
from .args import UsageError, check_output, parse_device, warn


def _mixture(names: Sequence[str], weights: Sequence[float]) -> str:
    return " + ".join(f"{w:g}·{n}" for n, w in zip(names, weights) if w != 0)


def cmd_soup_for(args: argparse.Namespace) -> int:
    import torch

    from ..config import resolve_config
    from ..soups.choice import choose_without_labels
    from ..soups.grid import simplex_grid

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
    scorer, methods = label_free_scorer(loaded, device)
    if args.method not in methods:  # only where the model has no BatchNorm layer
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
    weights, falls_back = written_weights(choice, args.method, names, fallback)
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
    fell_back_to = fallback if falls_back and fallback else None
    provenance = soup_for_provenance(
        args.folder, len(images), args.method, choice, threshold, dict(zip(names, weights)), fell_back_to
    )
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
