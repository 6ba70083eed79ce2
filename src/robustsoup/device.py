"""Device choice for jobs: CUDA when present (or asked for), the CPU otherwise."""

from __future__ import annotations

import torch


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` fails clearly when there is none."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; set device: auto or cpu")
        return torch.device("cuda")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"unknown device {preference!r}; expected auto, cpu or cuda")


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (Python's and NumPy's are not used for training)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
