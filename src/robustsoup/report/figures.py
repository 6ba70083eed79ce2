"""Figures from tidy metric rows (PNG for reading, PDF for papers)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..io import atomic_path


def save_figure(fig, path: str | Path) -> list[Path]:
    """Write ``fig`` to ``path`` (.png) and its .pdf twin, atomically; close it; return both paths."""
    png = Path(path)
    written = []
    for target in (png, png.with_suffix(".pdf")):
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=target.suffix[1:])
        written.append(target)
    plt.close(fig)
    return written
