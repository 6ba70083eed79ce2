"""Which models a signature may be applied to: the standard model it was extracted against, or one that
shares a trained ancestor with it (the transfer table's "shared initialization" targets).

A signature's sidecar records, under ``sources``, the init, standard and expert checkpoints it was
extracted from (name, tensors' SHA-256 and, since lineage is recorded, the standard model's lineage).
:func:`check_bases` compares a model's lineage (:mod:`robustsoup.lineage`) with that record: the same
model passes silently, a relative passes with a warning, an unrelated model is refused unless
``allow_unrelated`` (then warned about, naming both lineages).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from ..lineage import CHECKPOINT, LineageError, describe, shared_ancestors

TRANSFER_ADVICE = (
    "A signature lives in the basin of the model it was extracted against: the project's transfer table "
    "(tables/rws_transfer.md, rule rws_transfer) finds that signatures move to a standard model fine-tuned "
    "from the same initialization but lower accuracy on one with its own initialization."
)


def standard_of(sources: Mapping[str, Any]) -> SimpleNamespace | None:
    """The standard model a signature was extracted against, as far as its ``sources`` record it (None: not
    recorded). A record without lineage (older signatures) has the recorded init as its one ancestor."""
    standard = sources.get("standard") or {}
    if not standard.get("weights_sha256"):
        return None
    lineage = standard.get("lineage")
    if lineage is None:
        init = sources.get("init") or {}
        lineage = [{**init, "kind": CHECKPOINT}] if init.get("weights_sha256") else []
    return SimpleNamespace(
        name=standard.get("name", "?"), weights_sha256=standard["weights_sha256"], lineage=lineage, parent=None
    )


def check_bases(
    meta,
    signatures: Sequence,
    allow_unrelated: bool,
    advice: str,
    warn: Callable[[str], None] | None = None,
) -> None:
    """Raise :class:`~robustsoup.lineage.LineageError` if a signature was extracted against a model that
    shares no trained ancestor with ``meta`` (the checkpoint to patch; for an already patched one, its base
    counts as itself), unless ``allow_unrelated``. Relatives and the unrelated-but-allowed go to ``warn``."""
    patched_from = meta.provenance.get("rws_patch", {}).get("base_weights_sha256")
    own = {meta.weights_sha256, getattr(meta, "file_sha256", ""), patched_from} - {None, ""}
    unrelated = []
    for signature in signatures:
        standard = standard_of(signature.meta.sources)
        if standard is None:
            if warn is not None:
                warn(f"signature {signature.name} records no standard model, so its base cannot be checked")
            continue
        if standard.weights_sha256 in own:
            continue
        said = (
            f"signature {signature.name} was extracted against {standard.name} "
            f"(SHA-256 {standard.weights_sha256[:12]}…), not against {meta.name} ({meta.weights_sha256[:12]}…)"
        )
        common = shared_ancestors([meta, standard])
        if common:
            if warn is not None:
                warn(f"{said}; they share the ancestor(s) {', '.join(sorted(set(common.values())))}. {TRANSFER_ADVICE}")
            continue
        unrelated.append(f"{said}, and they share no trained ancestor ({describe(meta)}; {describe(standard)})")
    if not unrelated:
        return
    text = "; ".join(unrelated)
    if not allow_unrelated:
        raise LineageError(f"{text}. {TRANSFER_ADVICE} Patch a model of the signature's lineage, or {advice}.")
    if warn is not None:
        warn(f"{text}; applying it anyway, as asked. {TRANSFER_ADVICE}")
