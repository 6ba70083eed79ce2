"""Checkpoints: safetensors weights plus a JSON sidecar that says what they are.

``name.safetensors`` holds the state dict (no pickle, so loading runs no
code); ``name.json`` holds the architecture, data set, normalization, what the
model was trained for, its parent and lineage (every ancestor up to the
initialization, :mod:`robustsoup.lineage`), provenance and metrics, and two
SHA-256 digests: ``weights_sha256`` over the tensors in a canonical order (names,
dtypes, shapes, bytes: :func:`tensors_sha256`), which decides identity whatever
the file's header layout, and ``file_sha256`` of the file's bytes, so that a
truncated or swapped file is caught on load. Both files are written
atomically, weights first, so a sidecar never describes weights that are not
fully on disk.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .io import atomic_path, write_text_atomic
from .models import Normalized, create_model
from .state_dicts import CheckpointError, load_state_dict_checked

FORMAT = "robustsoup-checkpoint/1"


@dataclass
class CheckpointMeta:
    """The sidecar of a checkpoint.

    ``training`` describes what the weights were trained for (norm, ε in
    [0,1] pixel space, epochs, lr, schedule …) or is None for weights that
    were not trained (soups). ``provenance`` records how the weights were made
    beyond training (e.g. a soup's mixing weights).
    """

    name: str
    architecture: str
    model_kwargs: dict[str, Any]
    dataset: str
    num_classes: int
    mean: list[float]
    std: list[float]
    training: dict[str, Any] | None = None
    parent: str | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    git_commit: str = ""
    created: str = ""
    weights_sha256: str = ""
    file_sha256: str = ""
    lineage: list[dict[str, Any]] = field(default_factory=list)
    format: str = FORMAT

    def build(self) -> Normalized:
        """A freshly initialised model of this architecture and normalization (:func:`~robustsoup.models.create_model`)."""
        return create_model(self.architecture, self.num_classes, self.mean, self.std, **self.model_kwargs)


def sidecar_path(weights_path: str | Path) -> Path:
    """``models/x.safetensors`` → ``models/x.json``."""
    return Path(weights_path).with_suffix(".json")


def git_commit() -> str:
    """The commit of the robustsoup checkout that made an artifact, ``+dirty`` if modified."""
    repo = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return "unknown"
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tensors_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict's tensors in sorted key order (each key, dtype, shape, then its raw bytes):
    equal iff the tensors are bitwise equal, however a file lays them out (the checkpoints' identity)."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().to("cpu").contiguous()
        digest.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(weights_path: str | Path, state_dict: Mapping[str, torch.Tensor], meta: CheckpointMeta) -> Path:
    """Write ``state_dict`` and ``meta`` atomically; return the weights path."""
    weights_path = Path(weights_path)
    if weights_path.suffix != ".safetensors":
        raise CheckpointError(f"checkpoint weights must end in .safetensors, got {weights_path}")
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    meta.weights_sha256 = tensors_sha256(tensors)
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp), metadata={"format": FORMAT, "name": meta.name})
    meta.file_sha256 = file_sha256(weights_path)
    meta.git_commit = meta.git_commit or git_commit()
    meta.created = meta.created or _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    write_text_atomic(sidecar_path(weights_path), json.dumps(asdict(meta), indent=2, sort_keys=True) + "\n")
    return weights_path


def repair_advice(path: str | Path) -> str:
    """What to do about a damaged file: a workflow artifact (under ``results/<dataset>/``) is made again by
    deleting it and rerunning Snakemake; a file made by hand is restored from where it came from."""
    parts = Path(path).resolve().parts
    if "results" in parts[:-2]:
        return "delete the file and its .json sidecar and rerun Snakemake: the rule that wrote them makes them again"
    return (
        "it is not a workflow artifact, so nothing can remake it: restore it from where it came from "
        "(copy it again, or re-create it with the robustsoup command that wrote it)"
    )


def load_meta(weights_path: str | Path) -> CheckpointMeta:
    """Read and check the sidecar of ``weights_path``."""
    side = sidecar_path(weights_path)
    if not side.is_file():
        raise CheckpointError(
            f"checkpoint sidecar {side} is missing; expected it beside {weights_path} "
            "(a robustsoup checkpoint is a .safetensors file plus a .json sidecar)"
        )
    return read_sidecar(side, FORMAT, CheckpointMeta, CheckpointError, "checkpoint")


def read_sidecar(side: Path, fmt: str, meta_class: type, error: type[Exception], what: str):
    """Parse the JSON sidecar ``side`` into ``meta_class`` (a dataclass), checking its format tag.

    Fields the dataclass does not know are ignored (older or newer writers);
    a missing required field, invalid JSON or another format raise ``error``
    naming the file and what was found.
    """
    try:
        raw = json.loads(side.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} sidecar {side} is not UTF-8 text (byte {exc.start}: {exc.reason}); expected the JSON "
            f"robustsoup writes: {repair_advice(side)}"
        ) from exc
    except json.JSONDecodeError as exc:
        raise error(f"{what} sidecar {side} is not valid JSON ({exc}): {repair_advice(side)}") from exc
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        found = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise error(
            f"{what} sidecar {side}: expected format {fmt!r}, found {found!r}: it is not a robustsoup {what}'s "
            f"sidecar; give a {what} robustsoup wrote, or {repair_advice(side)}"
        )
    known = meta_class.__dataclass_fields__
    required = [name for name, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if name not in raw]
    if missing:
        raise error(
            f"{what} sidecar {side} lacks the field(s) {', '.join(missing)}; expected every one of "
            f"{', '.join(required)}: {repair_advice(side)}"
        )
    return meta_class(**{k: v for k, v in raw.items() if k in known})


UNVERIFIED_ADVICE = (
    "pass --trust-unverified to use it anyway (a warning is printed), or remake it with robustsoup, "
    "which records the digest"
)


def load_checkpoint(
    weights_path: str | Path,
    expect: Mapping[str, Any] | None = None,
    trust_unverified: bool = False,
    warn: Callable[[str], None] | None = None,
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Load weights and sidecar, checking integrity and, optionally, identity.

    The tensors must match the sidecar's ``weights_sha256`` (identity is decided by content: a file
    rewritten with another header layout but the same tensors passes; a sidecar from before
    ``file_sha256`` holds the file's digest there, which is then checked, and the returned meta
    carries the tensors' digest). A sidecar without
    a digest is refused unless ``trust_unverified`` (then ``warn`` is told). ``expect`` maps sidecar
    fields to required values, e.g. ``{"architecture": "preact_resnet_small", "dataset": "digits"}``; a
    mismatch raises :class:`CheckpointError` naming the file, the field, what was expected and what was found.
    """
    weights_path = Path(weights_path)
    if not weights_path.is_file():
        raise CheckpointError(
            f"checkpoint {weights_path} does not exist; expected a .safetensors file with its .json sidecar beside it"
        )
    meta = load_meta(weights_path)
    if not meta.weights_sha256:
        if not trust_unverified:
            raise CheckpointError(
                f"checkpoint sidecar {sidecar_path(weights_path)} has no weights_sha256, so the weights cannot be "
                f"checked against it; expected the SHA-256 robustsoup records: {UNVERIFIED_ADVICE}"
            )
        if warn is not None:
            warn(f"{weights_path}: its sidecar has no weights_sha256; using the weights unverified")
    # An older sidecar holds the file's digest in weights_sha256: then the bytes are what it records.
    legacy = not meta.file_sha256 and bool(meta.weights_sha256) and file_sha256(weights_path) == meta.weights_sha256
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {weights_path} is unreadable or truncated ({exc}): {repair_advice(weights_path)}"
        ) from exc
    content = tensors_sha256(state)
    if legacy:
        meta.file_sha256 = meta.weights_sha256
    elif meta.weights_sha256 and content != meta.weights_sha256:
        raise CheckpointError(
            f"checkpoint {weights_path} does not match its sidecar (its tensors' SHA-256 is {content[:12]}…, "
            f"the sidecar says {meta.weights_sha256[:12]}…): the file is truncated or was replaced; "
            f"{repair_advice(weights_path)}"
        )
    meta.weights_sha256 = content
    for key, wanted in (expect or {}).items():
        found = getattr(meta, key)
        if found != wanted:
            raise CheckpointError(f"checkpoint {weights_path}: expected {key} {wanted!r}, found {found!r}")
    return state, meta


def load_model(
    weights_path: str | Path, expect: Mapping[str, Any] | None = None, device: str | torch.device = "cpu"
) -> tuple[Normalized, CheckpointMeta]:
    """Build the model a checkpoint describes and load its weights (strictly)."""
    state, meta = load_checkpoint(weights_path, expect)
    model = meta.build()
    load_state_dict_checked(model, state, source=str(weights_path))
    return model.to(device).eval(), meta
