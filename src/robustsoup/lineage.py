"""Lineage: where a checkpoint's weights come from, and whether two checkpoints may be mixed.

A sidecar's ``lineage`` lists the checkpoint's ancestors, nearest first, up to the start of
training: each a record ``{"name", "weights_sha256", "kind"}`` with ``kind``

- ``checkpoint``: a robustsoup checkpoint (its tensors' digest);
- ``pretrained``: weights read from a file (a RobustBench zoo entry or the config's
  ``model.weights``), with the file's ``file`` and ``file_sha256`` beside the tensors' digest;
- ``random-init``: a fresh initialization (``seed``), the root of a model trained from scratch.

A soup's lineage is the union of its ingredients' (each ingredient a ``checkpoint`` record).

Weight arithmetic (soups, signatures, patches) assumes the models lie in one basin: they share a
trained ancestor. A shared *random* initialization is not enough (two models trained from scratch
from the same seed end in different basins; Frankle et al. 2020 find such pairs unstable for
networks beyond the smallest), so ``random-init`` roots never make two models related; a
checkpoint of an untrained initialization that was saved and fine-tuned from (RWS's ``init``)
does. :func:`check_related` is the one check; the CLI's ``--allow-unrelated`` and the config's
``allow_unrelated`` turn its refusal into a warning that names the lineages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .checkpoint import CheckpointError, CheckpointMeta, file_sha256, tensors_sha256

CHECKPOINT, PRETRAINED, RANDOM_INIT = "checkpoint", "pretrained", "random-init"

CLI_ADVICE = "pass --allow-unrelated to mix them anyway (a warning names both lineages)"
CONFIG_ADVICE = "set allow_unrelated: true in the config to mix them anyway (the job's log names both lineages)"


class LineageError(CheckpointError):
    """Checkpoints that share no trained ancestor, where weight arithmetic needs one."""


def record_of(meta: CheckpointMeta) -> dict[str, Any]:
    """The lineage record of a checkpoint (as an ancestor of another)."""
    return {"name": meta.name, "weights_sha256": meta.weights_sha256, "kind": CHECKPOINT}


def descend(child: CheckpointMeta, parent: CheckpointMeta) -> None:
    """Make ``child`` a descendant of ``parent``: its parent name and its lineage (parent first)."""
    child.parent = parent.name
    child.lineage = [record_of(parent), *parent.lineage]


def mixed(metas: Sequence[CheckpointMeta]) -> list[dict[str, Any]]:
    """The lineage of a mixture (soup) of ``metas``: each ingredient, then their ancestors, each once."""
    out, seen = [], set()
    for record in [record_of(m) for m in metas] + [r for m in metas for r in m.lineage]:
        key = (record.get("kind"), record.get("weights_sha256"), record.get("file_sha256"))
        if key not in seen:
            seen.add(key)
            out.append(dict(record))
    return out


def start_record(state: Mapping[str, torch.Tensor], seed: int | None, weights_file: str | Path | None, name: str):
    """The root of a training's lineage: a fresh initialization (``seed``) or weights read from a file."""
    record = {"name": name, "weights_sha256": tensors_sha256(state)}
    if weights_file is None:
        return {**record, "kind": RANDOM_INIT, "seed": seed}
    path = Path(weights_file)
    return {**record, "kind": PRETRAINED, "file": str(path), "file_sha256": file_sha256(path) if path.is_file() else ""}


def ancestry(meta: CheckpointMeta) -> dict[str, str]:
    """{digest: name} of the checkpoint itself and every trained or pretrained ancestor (random
    initializations left out, see the module docstring). A sidecar written before lineage was recorded
    contributes its own name and its parent's, as ``name:<name>`` keys."""
    found = {meta.weights_sha256: meta.name} if meta.weights_sha256 else {}
    for record in meta.lineage:
        if record.get("kind") == RANDOM_INIT:
            continue
        for key in ("weights_sha256", "file_sha256"):
            if record.get(key):
                found[record[key]] = record.get("name", "?")
    if not meta.lineage:
        found.update({f"name:{n}": n for n in (meta.name, meta.parent) if n})
    return found


def describe(meta: CheckpointMeta) -> str:
    """``name ← parent ← … ← root`` (digests shortened), for messages."""
    steps = [f"{meta.name} ({meta.weights_sha256[:8]})"]
    for record in meta.lineage:
        what = record.get("kind")
        digest = (record.get("file_sha256") or record.get("weights_sha256") or "")[:8]
        label = record.get("name", "?")
        if what == RANDOM_INIT:
            label = f"random init, seed {record.get('seed')}"
        elif what == PRETRAINED:
            label = f"file {record.get('file', label)}"
        steps.append(f"{label} ({digest})")
    if not meta.lineage:
        steps.append(f"{meta.parent} (no lineage recorded)" if meta.parent else "no lineage recorded")
    return " ← ".join(steps)


def shared_ancestors(metas: Sequence[CheckpointMeta]) -> dict[str, str]:
    """{digest: name} of the ancestors every one of ``metas`` has (a checkpoint is its own ancestor).
    Name keys (sidecars without lineage) count only when some sidecar lacks lineage."""
    sets = [ancestry(m) for m in metas]
    if all(m.lineage for m in metas):
        sets = [{k: v for k, v in s.items() if not k.startswith("name:")} for s in sets]
    else:  # compare by name too: a recorded ancestor's name stands for a sidecar without lineage
        sets = [{**s, **{f"name:{v}": v for v in s.values()}} for s in sets]
    common = set(sets[0])
    for s in sets[1:]:
        common &= set(s)
    return {k: sets[0][k] for k in sets[0] if k in common}


def check_related(
    metas: Sequence[CheckpointMeta],
    what: str,
    allow_unrelated: bool,
    advice: str,
    warn: Callable[[str], None] | None = None,
) -> dict[str, str]:
    """Raise :class:`LineageError` unless ``metas`` share an ancestor (see :func:`shared_ancestors`);
    with ``allow_unrelated``, tell ``warn`` instead. Returns the shared ancestors."""
    common = shared_ancestors(metas)
    if common or len(metas) < 2:
        return common
    lines = "; ".join(describe(m) for m in metas)
    text = (
        f"{what}: the models share no trained ancestor (lineages: {lines}); weight arithmetic expects models "
        "fine-tuned from one checkpoint or one pretrained file, and models trained apart mix into a poor model"
    )
    if not allow_unrelated:
        raise LineageError(f"{text}. Use models with a common ancestor, or {advice}.")
    if warn is not None:
        warn(f"{text}; mixing them anyway, as asked")
    return common
