"""One house style for every figure: sizes, fonts, a colour-blind-safe palette, readable names.

Every study's figure function draws inside :func:`house_style` and saves through
:func:`robustsoup.report.figures.save_figure`, so the figures of one run read as one set:
9-pt text at print size (a figure is drawn at its printed width, 3.4 in for one column,
7 in for two), PNG at 300 dpi beside a vector PDF, the Okabe–Ito palette (distinguishable
with the common colour-vision deficiencies and, through markers and dashes, in grey),
legends beside the data rather than on it, and model names a reader knows ("L∞ parent",
"L∞→L2 fine-tune") instead of file ids.
"""

from __future__ import annotations

import contextlib
import textwrap
from collections.abc import Iterable, Iterator, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from cycler import cycler
from matplotlib.colors import Colormap, Normalize, to_rgba

# Okabe & Ito (2008), "Color Universal Design": eight colours told apart with every common
# colour-vision deficiency. Yellow last: it is too light for thin lines on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*")

ONE_COLUMN = 3.4  # inches: the printed width of a one-column figure
TWO_COLUMNS = 7.0  # inches: a full-width figure
PNG_DPI = 300

RC = {
    "figure.dpi": 100,
    "savefig.dpi": PNG_DPI,
    "figure.constrained_layout.use": True,
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "legend.frameon": False,
    "figure.titlesize": 10,
    "axes.prop_cycle": cycler(color=PALETTE[:7]),
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.5,
    "lines.markersize": 4.5,
    "image.cmap": "viridis",
    "pdf.fonttype": 42,  # TrueType in the PDF: text stays text (selectable, editable)
    "svg.fonttype": "none",
}

# One look per threat model in every figure: colour, marker and dash together, so the
# curves stay apart in grey print too.
THREAT_STYLE = {
    "none": {"color": "#000000", "marker": "o", "linestyle": "-"},
    "Linf": {"color": "#0072B2", "marker": "s", "linestyle": "-"},
    "L2": {"color": "#E69F00", "marker": "^", "linestyle": "-"},
    "L1": {"color": "#009E73", "marker": "v", "linestyle": "-"},
    "union": {"color": "#D55E00", "marker": "D", "linestyle": "--"},
}


@contextlib.contextmanager
def house_style(**overrides) -> Iterator[None]:
    """Draw inside this block to use the house style (``overrides``: extra rcParams)."""
    with plt.rc_context({**RC, **overrides}):
        yield


def legend_outside(ax, handles=None, labels=None, title: str | None = None, where: str = "right"):
    """A legend beside the axes (``right``) or under the figure (``below``), never over data."""
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if where == "right":
        return ax.legend(handles, labels, title=title, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)
    if where == "below":
        ncol = min(len(handles), 5)
        return ax.figure.legend(handles, labels, title=title, loc="outside lower center", ncol=ncol)
    raise ValueError(f"legend_outside: where must be 'right' or 'below', found {where!r}")


def footnote(fig, text: str) -> None:
    """A small grey line under the figure: how the numbers were measured (attack, n)."""
    if text:
        # about 17 characters of 7-pt text per inch: wrapped to the figure's width, never widening it
        wrapped = textwrap.fill(text, width=max(40, int(fig.get_figwidth() * 17)))
        fig.supxlabel(wrapped, fontsize=7, color="0.35", x=0.0, ha="left", multialignment="left")


def shared_limits(values: Iterable[float], floor: float = 0.0, ceiling: float = 100.0, pad: float = 3.0):
    """One y-range for panels a reader compares: the data's span padded, clipped to [floor, ceiling].

    Starting at a round 10 below the smallest value keeps a small dip from looking like a cliff.
    """
    data = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if data.size == 0:
        return floor, ceiling
    low = max(floor, np.floor((data.min() - pad) / 10) * 10)
    high = min(ceiling + pad, max(data.max() + pad, low + 10))
    return float(low), float(high)


def colour_range(values: Iterable[float], min_span: float = 1.0, low: float = 0.0, high: float = 100.0):
    """A colour scale that shows the differences in ``values``: their own min and max.

    The span is at least ``min_span`` (centred on the data, kept inside [low, high]), so equal
    values do not make a degenerate scale and a one-image difference is not painted as a
    contrast of black against yellow.
    """
    data = np.asarray([v for v in values if np.isfinite(v)], dtype=float)
    if data.size == 0:
        return low, high
    vmin, vmax = float(data.min()), float(data.max())
    if vmax - vmin < min_span:
        middle = (vmin + vmax) / 2
        vmin, vmax = middle - min_span / 2, middle + min_span / 2
        if vmin < low:
            vmin, vmax = low, low + min_span
        if vmax > high:
            vmin, vmax = high - min_span, high
    return vmin, vmax


def text_colour(background) -> str:
    """Black or white, whichever reads better on ``background`` (WCAG relative luminance)."""
    r, g, b, _ = to_rgba(background)

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b)
    # contrast with black (L + 0.05) / 0.05 against with white 1.05 / (L + 0.05): equal at L ≈ 0.179
    return "black" if luminance > 0.179 else "white"


def annotate_values(
    ax,
    xy: Sequence[Sequence[float]],
    values: Sequence[float],
    cmap: Colormap,
    norm: Normalize,
    fmt: str = "{:.1f}",
    fontsize: float = 7,
) -> None:
    """Write each value on its cell in black or white, whichever contrasts with the cell's colour."""
    for (x, y), value in zip(xy, values):
        if not np.isfinite(value):
            continue
        ax.text(
            x,
            y,
            fmt.format(value),
            ha="center",
            va="center",
            fontsize=fontsize,
            color=text_colour(cmap(norm(value))),
        )


def palette(n: int) -> list[str]:
    """``n`` colours of the house palette (cycled when more are asked for)."""
    return [PALETTE[i % len(PALETTE)] for i in range(n)]


def sequential(n: int, cmap: str = "viridis", stop: float = 0.85) -> list:
    """``n`` ordered colours (severities, steps) from a perceptually uniform map, yellow end cut."""
    colours = plt.get_cmap(cmap)
    return [colours(stop * i / max(1, n - 1)) for i in range(n)]
