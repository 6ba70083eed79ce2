"""Distribution shifts as evaluation sets: clean data and corruption families.

The soups paper chooses a soup per shift from a few labelled images of it.
On a data set with generated corruptions (the embedded default), the shifts
are the four corruption families of Hendrycks & Dietterich (noise, blur,
weather, digital) plus clean data. A family's set is a *mixture*: image i of
the split is shown under one corruption of the family at one of the
configured severities, both drawn with a fixed seed, so a family set has as
many images as the split (cheap to score hundreds of soups on) and covers the
family evenly. In the tidy metrics such rows carry ``corruption`` = the
family and ``severity`` = :data:`MIXED_SEVERITY`.

The data sets configured in ``data.shifts`` (ImageNet-R, -Sketch, -A, -V2,
ReaL, cue-conflict, the -C sets …) are shifts too, each named by its data
set: one adaptation set (a -C set's parts taken in turn, see
:mod:`robustsoup.soups.stages`) and held-out rows per part
(:func:`part_label`).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data import FileSplit, ImageSplit
from ..data.corrupted import corrupted_split
from ..data.corruptions import FAMILIES
from ..data.splits import Split

MIXED_SEVERITY = -1
FAMILY_ORDER = ("noise", "blur", "weather", "digital")


def family_corruptions(corruptions: Sequence[str]) -> dict[str, list[str]]:
    """The configured corruptions grouped by family, families in Hendrycks' order, empty ones dropped."""
    groups = {family: [c for c in corruptions if FAMILIES[c] == family] for family in FAMILY_ORDER}
    return {family: names for family, names in groups.items() if names}


def family_mixture(
    corrupted_dir: str | Path,
    family: str,
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int,
    split: Split,
) -> Split:
    """One image per split image: a corruption of ``family`` at a severity, drawn with ``seed``.

    ``corrupted_dir`` holds the split's corrupted copies (:func:`robustsoup.data.corrupted.corrupted_split`:
    Hendrycks' arrays, with the configured ``severities`` in row blocks, or ImageNet-C folders). A
    decoded split gives a decoded mixture; a file-list split a file list of the chosen copies, decoded
    on demand like the split itself.
    """
    if not corruptions:
        raise ValueError(f"family {family!r} has no configured corruption")
    rng = np.random.default_rng([seed, zlib.crc32(family.encode())])
    pieces = {
        (corruption, severity): corrupted_split(corrupted_dir, split, corruption, severity, severities)
        for corruption in corruptions
        for severity in severities
    }
    n = len(split)
    which = rng.integers(len(corruptions), size=n)
    level = rng.integers(len(severities), size=n)
    chosen = [pieces[(corruptions[which[i]], severities[level[i]])] for i in range(n)]
    name = f"{split.split}:{family}"
    if isinstance(split, FileSplit):
        paths = [piece.paths[i] for i, piece in enumerate(chosen)]
        return FileSplit(paths, split.labels, split.dataset, name, split.resolution, resize=None, targets=split.targets)
    out = torch.empty_like(split.images)
    for i, piece in enumerate(chosen):
        out[i] = piece.images[i]
    return ImageSplit(out, split.labels, split.dataset, name, targets=split.targets)


def evaluation_sets(
    split: Split,
    corrupted_dir: str | Path | None,
    corruptions: Sequence[str],
    severities: Sequence[int],
    seed: int,
) -> dict[str, Split]:
    """``clean`` and one mixture per corruption family (when corrupted copies exist)."""
    sets = {"clean": split}
    if corrupted_dir is not None:
        for family, names in family_corruptions(corruptions).items():
            sets[family] = family_mixture(corrupted_dir, family, names, severities, seed, split)
    return sets


# ---------------------------------------------------------------------------
# Configured shift data sets (data.shifts): ImageNet-R/-A/-Sketch/-V2/ReaL, cue-conflict, the -C sets …


def part_label(part: str) -> tuple[str, int]:
    """A shift part's ``(corruption, severity)`` for the tidy rows: ``("none", 0)`` for a single-part
    set (``all``), ``(corruption, severity)`` for a -C set's ``<corruption>/<severity>``."""
    if part == "all":
        return "none", 0
    corruption, _, severity = part.partition("/")
    if not corruption or not severity.isdigit():
        raise ValueError(f"shift part {part!r}: expected 'all' or '<corruption>/<severity>'")
    return corruption, int(severity)
