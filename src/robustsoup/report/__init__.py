"""Table and figure plumbing shared by every study's report: CSV + Markdown + HTML tables, PNG + PDF + HTML
figures in one house style (:mod:`.style`), names a reader knows (:mod:`.labels`).

The figure helpers load lazily: every job imports this package (``snakemake_job`` reads the
job-record constant of :mod:`.benchmarks`), and matplotlib would cost each a third of a second.
"""

from __future__ import annotations

import importlib

from .html import figure_page, table_page, write_figure_page, write_table_page
from .labels import model_label, threat_label
from .tables import THREAT_COLUMNS, attack_summary, evaluation_note, to_markdown, write_table

_LAZY = {"save_figure": ".figures", "house_style": ".style"}

__all__ = [
    "THREAT_COLUMNS",
    "attack_summary",
    "evaluation_note",
    "figure_page",
    "house_style",
    "model_label",
    "save_figure",
    "table_page",
    "threat_label",
    "to_markdown",
    "write_figure_page",
    "write_table",
    "write_table_page",
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
