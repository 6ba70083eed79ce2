"""The whole run over its seeds: every seed's table as mean ± sd, and one ledger of every seed's rows.

Rule ``report_seeds`` reads what each seed's report wrote (``seed-<s>/tables/<name>.csv`` and
``seed-<s>/metrics/all.tsv``, see :mod:`robustsoup.seeds`) and never recomputes a number: a table's numeric
cell becomes the mean over the seeds and, with several seeds, its sample standard deviation (n − 1), shown as
``mean ± sd``; a text cell stays as it is when the seeds agree and lists each seed's otherwise. With one
seed the table holds that seed's values. Knows no study. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_text_atomic
from .html import write_table_page

SD_SUFFIX = " (sd)"  # the CSV column of a numeric column's standard deviation across seeds


def number(value) -> float | None:
    """``value`` as a float, None when it is not a number (text, empty)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(out) else out


def _digits(value: float) -> str:
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` (sample sd, n − 1) of several values; one value alone as it reads (1 decimal from 10 up,
    else 3 significant digits); the sd with as many decimals as the mean."""
    values = [float(v) for v in values]
    if not values:
        return ""
    mean = float(np.mean(values))
    if len(values) == 1:
        return _digits(mean)
    sd = float(np.std(values, ddof=1))
    shown = _digits(mean)
    decimals = len(shown.split(".")[1]) if "." in shown and "e" not in shown else 0
    return f"{shown} ± {sd:.{decimals}f}"


def combine_tables(tables: Mapping[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(numbers, shown) of one table's ``{seed: table}`` (same columns, rows matched by index): numbers holds
    each numeric cell's mean and, with several seeds, a ``<column> (sd)`` column beside it; shown holds the
    cells as text (``mean ± sd``). A row or cell some seeds lack is the mean over the seeds that have it."""
    seeds = list(tables)
    rows = list(dict.fromkeys(i for t in tables.values() for i in t.index))
    columns = list(dict.fromkeys(c for t in tables.values() for c in t.columns))
    numbers: dict[str, list] = {}
    shown: dict[str, list] = {c: [] for c in columns}
    for column in columns:
        means, sds = [], []
        for row in rows:
            cells = {s: t.at[row, column] for s, t in tables.items() if row in t.index and column in t.columns}
            values = [number(v) for v in cells.values()]
            present = [v for v in values if v is not None]
            if present and len(present) == len([v for v in cells.values() if not _empty(v)]):
                means.append(float(np.mean(present)))
                sds.append(float(np.std(present, ddof=1)) if len(present) > 1 else np.nan)
                shown[column].append(mean_sd(present))
                continue
            texts = {s: "" if _empty(v) else str(v) for s, v in cells.items()}
            distinct = set(texts.values())
            text = distinct.pop() if len(distinct) == 1 else " · ".join(f"seed {s}: {t}" for s, t in texts.items())
            means.append(text)
            sds.append(np.nan)
            shown[column].append(text)
        numbers[column] = means
        if len(seeds) > 1 and any(isinstance(m, float) for m in means):
            numbers[column + SD_SUFFIX] = sds
    index = next(iter(tables.values())).index.name
    numbers_frame = pd.DataFrame(numbers, index=pd.Index(rows, name=index))
    return numbers_frame, pd.DataFrame(shown, index=pd.Index(rows, name=index))


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or value == ""


def seeds_note(seeds: Sequence[str], name: str) -> str:
    if len(seeds) == 1:
        return f"Seed {seeds[0]} (the run's one seed): its table seed-{seeds[0]}/tables/{name}.md, with its notes."
    return (
        f"Each number: mean ± sd (sample standard deviation, n − 1) over the {len(seeds)} seeds {', '.join(seeds)}, "
        f"one run each; a text cell that differs lists each seed's. Each seed's table, with its notes: "
        f"seed-<s>/tables/{name}.md."
    )


def _title(csv_path: str | Path, name: str) -> str:
    """The first seed's table title (its Markdown's heading), else the table's name."""
    md = Path(csv_path).with_suffix(".md")
    first = md.read_text().splitlines()[0] if md.is_file() else ""
    return first.removeprefix("# ").strip() if first.startswith("# ") else name


def markdown(shown: pd.DataFrame, title: str, note: str) -> str:
    header = [shown.index.name or "", *map(str, shown.columns)]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in shown.iterrows():
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in [name, *row.values]) + " |")
    return "\n".join([*lines, "", note, ""])


KEY = "\x00"  # joins a row's label and its occurrence among rows of the same label


def read_table(path: str | Path) -> pd.DataFrame:
    """A table's CSV, its first column the index; a label that repeats (a model's rows, one per mode) is told
    apart by its occurrence (label, KEY, n), so that the seeds' tables match row by row."""
    table = pd.read_csv(path)
    first = table.columns[0]
    occurrence = table.groupby(first, sort=False, dropna=False).cumcount()
    table.index = pd.Index([f"{v}{KEY}{n}" for v, n in zip(table[first], occurrence, strict=True)])
    table.index.name = None if str(first).startswith("Unnamed:") else first
    return table.drop(columns=first)


def _labels(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    name = frame.index.name
    frame.index = pd.Index([str(i).split(KEY)[0] for i in frame.index], name=name)
    return frame


def write_seed_table(name: str, by_seed: Mapping[str, str], outputs: Mapping[str, str]) -> pd.DataFrame:
    """One table over the seeds: ``by_seed`` {seed: its CSV} → ``outputs`` {csv, md, html: file}."""
    tables = {seed: read_table(path) for seed, path in by_seed.items()}
    numbers, shown = (_labels(frame) for frame in combine_tables(tables))
    seeds = list(by_seed)
    title = _title(next(iter(by_seed.values())), name) + (f" (mean ± sd, {len(seeds)} seeds)" if len(seeds) > 1 else "")
    note = seeds_note(seeds, name)
    write_text_atomic(outputs["csv"], numbers.to_csv(float_format="%.6g"))
    write_text_atomic(outputs["md"], markdown(shown, title, note))
    write_table_page(shown, outputs["html"], title, note, index_name=shown.index.name, cell=lambda c, v: str(v))
    return numbers


def combine_ledgers(ledgers: Mapping[str, str]) -> pd.DataFrame:
    """Every seed's ``metrics/all.tsv`` ({seed: file}) in one frame, a ``seed`` column first, cells as written."""
    frames = []
    for seed, path in ledgers.items():
        frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        frame.insert(0, "seed", seed)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def report_seeds(
    ledgers: Mapping[str, str],
    ledger: str,
    tables: Mapping[str, Mapping[str, str]],
    outputs: Mapping[str, Mapping[str, str]],
) -> None:
    """Rule ``report_seeds``: the run's ledger (every seed's rows, a ``seed`` column) and each of ``tables``
    ({name: {seed: its CSV}}) as mean ± sd over the seeds (``outputs``: {name: {csv, md, html: file}})."""
    write_text_atomic(ledger, combine_ledgers(ledgers).to_csv(sep="\t", index=False))
    for name, by_seed in tables.items():
        write_seed_table(name, by_seed, outputs[name])
