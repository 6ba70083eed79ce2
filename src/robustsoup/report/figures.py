"""Figures from tidy metric rows (PNG for reading, PDF for papers)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ..io import atomic_path  # noqa: E402
from .tables import THREAT_COLUMNS  # noqa: E402


def soup_line_points(metrics: pd.DataFrame, grid: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """Accuracy along the line (1 − w)·θ_a + w·θ_b: columns position, threat, accuracy.

    The end points are the base models ``a`` (w = 0) and ``b`` (w = 1).
    """
    on_line = grid[grid["line"] == f"{a}~{b}"][["id", "position"]]
    positions = pd.concat(
        [on_line.rename(columns={"id": "model"}), pd.DataFrame({"model": [a, b], "position": [0.0, 1.0]})]
    )
    rows = metrics[metrics["corruption"] == "none"].merge(positions, on="model")
    return rows[["position", "threat", "accuracy", "n"]].sort_values("position")


def plot_soup_line(points: pd.DataFrame, a: str, b: str, path: str | Path, subtitle: str = "") -> list[Path]:
    """Plot accuracy (%) against w for every threat; write ``path`` (.png) and its .pdf twin."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=150)
    styles = {"none": "k-o", "Linf": "C0-s", "L2": "C1-^", "L1": "C2-v", "union": "C3--D"}
    for threat in [t for t in THREAT_COLUMNS if t in set(points["threat"])]:
        group = points[points["threat"] == threat]
        ax.plot(group["position"], group["accuracy"] * 100, styles.get(threat, "-"),
                label=THREAT_COLUMNS.get(threat, threat), markersize=4)
    lo, hi = points["position"].min(), points["position"].max()
    if lo < 0:
        ax.axvspan(lo, 0, color="0.92", zorder=0)
    if hi > 1:
        ax.axvspan(1, hi, color="0.92", zorder=0, label="extrapolation")
    ax.set_xlabel(f"w in (1 − w)·θ[{a}] + w·θ[{b}]")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Soups between {a} and {b}" + (f"\n{subtitle}" if subtitle else ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


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
