"""``robustsoup soup-for``: a soup for unlabelled images (its arguments, messages and output; the work is
:func:`robustsoup.soups.unlabelled.soup_for`'s).

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
from collections.abc import Mapping
from pathlib import Path

from ..lineage import CLI_ADVICE
from ..soups.grid import mixture_text
from ..soups.search import LABEL_FREE_METHODS
from ..soups.unlabelled import DEFAULT_METHOD, SoupFor, soup_for
from .args import UsageError, check_output, parse_device, warn


def _mixture(result: SoupFor, weights: Mapping[str, float]) -> str:
    return mixture_text((weights[n], n) for n in result.names)


def cmd_soup_for(args: argparse.Namespace) -> int:
    if len(args.models) < 2:
        raise UsageError(
            f"soup-for needs at least two checkpoints of one soup family (MODEL MODEL …); got {len(args.models)}"
        )
    check_output("-o", args.output, args.models)
    result = soup_for(
        args.folder,
        args.models,
        args.output,
        method=args.method,
        step=args.step,
        extend=args.extend,
        threshold=args.threshold,
        fallback=args.fallback,
        max_images=args.max_images,
        device=parse_device(args.device),
        trust_unverified=args.trust_unverified,
        allow_unrelated=args.allow_unrelated,
        advice=CLI_ADVICE,
        warn=warn,
    )
    choice, chosen = result.choice, result.chosen
    print(
        f"{result.images} images from {result.folder} ({result.resolution} px, as {result.dataset}); "
        f"{result.grid_size} soups of {', '.join(result.names)} (step {result.step:g}, extend {result.extend:g})"
    )
    for method, selection in choice.selections.items():
        mark = "*" if method == result.method else " "
        print(
            f"{mark} {method:<12} {_mixture(result, selection.weights):<50} "
            f"score {selection.details['score']:.4f}  disagreement {choice.disagreement[method]:.3f}"
        )
    if result.falls_back:
        if not result.fallback:
            advice = "writing the pick anyway (pass --fallback MODEL to write a base model instead)"
        elif chosen.weights[result.fallback] == 1.0:
            advice = f"the pick is the fallback {result.fallback} already"
        else:
            advice = f"writing the fallback {result.fallback} instead"
        warn(
            f"the label-free picks disagree on {choice.disagreement[result.method]:.1%} of the images (threshold "
            f"{result.threshold:.1%}): the {result.method} pick may not beat the best base model; {advice}"
        )
    written = _mixture(result, dict(zip(result.names, result.weights)))
    print(f"wrote {args.output} = {written} ({chosen.forward_passes} forward passes)")
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
