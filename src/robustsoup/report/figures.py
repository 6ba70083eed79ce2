"""Figures from tidy metric rows: PNG at print resolution for reading, PDF for papers, and an
HTML page (the PNG with its caption) for Snakemake's report."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ..io import atomic_path
from .html import write_figure_page
from .style import PNG_DPI

# No creation date in the files: the same numbers give the same bytes.
_METADATA = {".png": {"Software": None}, ".pdf": {"CreationDate": None, "Creator": None, "Producer": None}}


def save_figure(fig, path: str | Path, title: str = "", caption: str = "") -> list[Path]:
    """Write ``fig`` to ``path`` (.png, 300 dpi), its .pdf twin and its .html page, atomically;
    close it; return the three paths.

    The page (:func:`robustsoup.report.html.figure_page`) shows the PNG with ``title`` above and
    ``caption`` under it; the title defaults to the figure's suptitle or the file's stem.
    """
    png = Path(path)
    if png.suffix != ".png":
        raise ValueError(f"save_figure: expected a .png path (the .pdf and .html go beside it), found {png}")
    title = title or (fig._suptitle.get_text() if fig._suptitle is not None else "") or png.stem
    written = []
    for target in (png, png.with_suffix(".pdf")):
        with atomic_path(target) as tmp:
            fig.savefig(
                tmp,
                format=target.suffix[1:],
                dpi=PNG_DPI,
                bbox_inches="tight",
                pad_inches=0.04,
                metadata=_METADATA[target.suffix],
            )
        written.append(target)
    plt.close(fig)
    written.append(write_figure_page(png, png.with_suffix(".html"), title, caption))
    return written
