"""Soups of checkpoints outside the workflow (``robustsoup soup`` and ``soup-for``): which checkpoints may be
mixed, and the soup written through the one mixer (:func:`robustsoup.weights.affine_combination`, as the
workflow's :func:`robustsoup.soups.stages.make_soup`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..checkpoint import CheckpointError, CheckpointMeta, save_checkpoint
from ..data.imagefolder import SIDECAR_KEYS
from ..lineage import mixed
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
