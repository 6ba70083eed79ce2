"""State dicts, below the models: a strict load that names the first bad key, and third-party weight
files read as tensors only (never unpickled code).

:mod:`robustsoup.models.zoo` loads weight files through these and :mod:`robustsoup.checkpoint`
(which re-exports them) its own; both raise :class:`CheckpointError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file


class CheckpointError(ValueError):
    """A checkpoint that is missing, truncated, inconsistent or of another model."""


def load_state_dict_checked(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict(state)`` with an error that names the first bad key."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise CheckpointError(
            f"{source} is for another architecture: missing keys {missing[:3]}"
            f"{'…' if len(missing) > 3 else ''}, unexpected keys {unexpected[:3]}"
            f"{'…' if len(unexpected) > 3 else ''}"
        )
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{source} is for another architecture: key {key!r} has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(tensor.shape)}"
            )
    model.load_state_dict(state, strict=True)


def load_foreign_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a third-party weights file as tensors only.

    ``.safetensors`` files load directly; ``.pt``/``.pth`` only through
    ``torch.load(weights_only=True)``: pickles that need arbitrary code to
    load are refused by torch, and the error says so. ``{"state_dict": …}``,
    ``{"model": …}``, ``{"model_state_dict": …}`` and RobustBench's
    ``{"last": …}`` wrappers are unwrapped and a DataParallel ``module.``
    prefix is dropped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"third-party checkpoint {path} does not exist")
    if path.suffix == ".safetensors":
        try:
            obj = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"{path} is unreadable or truncated ({exc})") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several types for unsafe or broken pickles
            raise CheckpointError(
                f"{path} could not be loaded with torch.load(weights_only=True): {exc}. "
                "robustsoup never unpickles code; convert the file to a plain state dict of tensors"
            ) from exc
    for wrapper in ("state_dict", "model_state_dict", "model", "last"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}
