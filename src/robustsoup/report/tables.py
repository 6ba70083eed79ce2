"""Tables from tidy metric rows: CSV and Markdown, never recomputing a number."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import write_text_atomic
from .html import write_table_page
from .labels import CLEAN_ON_ATTACKED, NO_EPS, THREAT_NAMES, attack_text, eps_text

# Threat of a tidy row → how the notes name it (as the accuracy table's columns and the figures do:
# L∞, L2, L1; a column adds its ε).
THREAT_COLUMNS = {
    "none": "clean (all N)",
    CLEAN_ON_ATTACKED: "clean (attacked n)",
    "Linf": THREAT_NAMES["Linf"],
    "L2": THREAT_NAMES["L2"],
    "L1": THREAT_NAMES["L1"],
    "union": "union",
}


def attack_summary(metrics: pd.DataFrame) -> str:
    """A short line for a figure: the attacks and how many images they saw (the norms' rows: clean rows
    have no attack, and union's attack is the norms' together)."""
    attacked = metrics[~metrics["threat"].isin(NO_EPS)]
    attacks = " / ".join(attack_text(a) for a in sorted(set(attacked["attack"])))
    sizes = "/".join(map(str, sorted(set(attacked["n"]))))
    return f"robust accuracy: {attacks}; n={sizes}" if attacks else ""


def evaluation_note(metrics: pd.DataFrame) -> str:
    """A sentence saying on how many images and with which attack the numbers were measured."""
    parts = []
    for threat, group in metrics.groupby("threat", sort=False):
        sizes = sorted(set(group["n"]))
        attacks = sorted(set(group["attack"]))
        eps = sorted(set(group["eps"]))
        eps_part = f" ε={' / '.join(eps_text(e) for e in eps)}" if threat not in NO_EPS else ""
        parts.append(
            f"{THREAT_COLUMNS.get(threat, threat)}{eps_part}: n={'/'.join(map(str, sizes))}, {'/'.join(attacks)}"
        )
    return "; ".join(parts)


def to_markdown(table: pd.DataFrame, title: str, note: str) -> str:
    """A GitHub-flavoured Markdown table with a title and a note under it."""
    header = ["model", *table.columns]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        cells = [str(name)] + ["" if pd.isna(v) else f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Accuracy in %. {note}.", ""]
    return "\n".join(lines)


def write_table(table: pd.DataFrame, stem: str | Path, title: str, note: str, caption: str = "") -> list[Path]:
    """Write ``stem.csv``, ``stem.md`` and ``stem.html`` (the page Snakemake's report shows inline, with
    ``caption`` above the table) atomically; return the three paths."""
    stem = Path(stem)
    csv_path, md_path = stem.with_suffix(".csv"), stem.with_suffix(".md")
    write_text_atomic(csv_path, table.to_csv())
    write_text_atomic(md_path, to_markdown(table, title, note))
    html_path = write_table_page(
        table, stem.with_suffix(".html"), title, f"Accuracy in %. {note}.", caption, index_name="model"
    )
    return [csv_path, md_path, html_path]
