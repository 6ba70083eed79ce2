"""Self-contained HTML pages of tables and figures, for Snakemake's HTML report.

Snakemake 9's report shows a ``text/html`` result inline (in a frame, from a data URI) but
offers a CSV or TSV only as a download, and keeps a result's caption in a side panel. So
every table is also written as a small HTML page (title, the rendered table, its note and
caption) and every figure as a page holding the PNG itself with its caption underneath:
the report item is that page, readable where it opens. The pages need nothing outside
themselves (inline CSS, the image as a data URI), so they also open from the file system.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_text_atomic

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: #1f2933; background: #ffffff; margin: 1.2rem 1.5rem; line-height: 1.45; max-width: 80rem; }
h1 { font-size: 1.15rem; margin: 0 0 0.8rem 0; }
p { font-size: 0.9rem; margin: 0.6rem 0; max-width: 60rem; }
p.caption { color: #3e4c59; }
p.note { color: #52606d; font-size: 0.85rem; }
code { font-size: 0.85em; background: #f0f4f8; padding: 0 0.2em; border-radius: 3px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: 0.85rem; font-variant-numeric: tabular-nums; margin-bottom: 0.8rem; }
caption { caption-side: top; text-align: left; font-size: 0.8rem; color: #52606d; padding-bottom: 0.2rem; }
th, td { padding: 0.25rem 0.45rem; border-bottom: 1px solid #d9e2ec; vertical-align: top; }
thead th { position: sticky; top: 0; background: #f0f4f8; border-bottom: 2px solid #9fb3c8;
           text-align: center; vertical-align: bottom; }
tbody th { text-align: left; font-weight: 600; min-width: 7rem; overflow-wrap: break-word; }
td.num { text-align: right; white-space: nowrap; }
td.text { text-align: left; min-width: 6rem; }
tbody tr:nth-child(even) { background: #f8fafc; }
tbody tr:hover { background: #e6f0fa; }
figure { margin: 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e7eb; }
figcaption { font-size: 0.9rem; color: #3e4c59; max-width: 60rem; margin-top: 0.6rem; }
"""


def inline_markup(text: str) -> str:
    """Escape ``text`` for HTML; ```code``` spans become ``<code>`` (the notes name models that way)."""
    escaped = html.escape(text, quote=False)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


def format_cell(column: str, value) -> str:
    """A cell as the Markdown tables write it: empty for missing, one decimal for floats."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)) or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating):
        return f"{value:.1f}"
    return str(value)


def _is_number(value) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool)


def page(title: str, body: str) -> str:
    """A complete HTML document with the house CSS."""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<h1>{inline_markup(title)}</h1>\n{body}\n</body>\n</html>\n"
    )


# How wide a table may be, in characters of its font, to fit Snakemake's report at 1,400 px: the
# report's frame is then about 920 px wide (its menu takes the rest), some 105 characters at 0.85rem.
# A wider table is split into parts of whole columns, each repeating the row names.
TABLE_WIDTH_CH = 105
_WRAP_CH = 12  # a text cell wraps down to about this many characters (a header to its longest word)
_PAD_CH = 2  # a cell's padding and border


def _words(text: str) -> list[str]:
    """The pieces a browser may break ``text`` between: at spaces and after hyphens."""
    return [w for w in re.split(r"\s+|(?<=-)", text) if w]


def _width(texts, wraps: bool) -> int:
    """A column's width in characters: its longest text, or (when it wraps) its longest unbreakable
    piece, at least the shorter of its longest text and :data:`_WRAP_CH`."""
    longest = max((len(t) for t in texts), default=0)
    if not wraps:
        return longest
    piece = max((len(w) for t in texts for w in _words(t)), default=0)
    return max(piece, min(longest, _WRAP_CH))


def column_parts(headers: list[str], cells: list[list[str]], kinds: list[str], row_names: list[str]) -> list[range]:
    """The columns of a table (``headers``, ``cells`` per column) as consecutive parts, each as wide as
    :data:`TABLE_WIDTH_CH` at most with the row names (one column per part when a column alone is wider):
    as few parts as that allows, of about equal width."""
    room = TABLE_WIDTH_CH - _width(row_names, wraps=True) - _PAD_CH
    widths = [
        max(max(map(len, _words(h)), default=0), _width(c, wraps=kind == "text")) + _PAD_CH
        for h, c, kind in zip(headers, cells, kinds)
    ]
    parts, start, used = [], 0, 0
    for i, width in enumerate(widths):
        if i > start and used + width > room:
            parts.append(range(start, i))
            start, used = i, 0
        used += width
    parts.append(range(start, len(widths)))
    balanced = _balanced(widths, len(parts))
    return balanced if all(sum(widths[p.start : p.stop]) <= room for p in balanced) else parts


def _balanced(widths: list[int], count: int) -> list[range]:
    """``widths`` cut into ``count`` consecutive parts, each cut where the running width is nearest an
    equal share."""
    total, cuts, running = sum(widths), [0], 0
    for i, width in enumerate(widths):
        if len(cuts) < count and i > cuts[-1] and running + width / 2 > total * len(cuts) / count:
            cuts.append(i)
        running += width
    return [range(a, b) for a, b in zip(cuts, [*cuts[1:], len(widths)])]


def table_html(
    table: pd.DataFrame,
    index_name: str | None = None,
    cell: Callable[[str, object], str] = format_cell,
) -> str:
    """``table`` as an HTML ``<table>``: the index as row headers, numbers right-aligned, text wrapped.

    ``cell(column, value)`` writes each cell, so a page shows the numbers exactly as the
    study's Markdown table does. A table wider than a 1,400-px report (:data:`TABLE_WIDTH_CH`) is
    split into several tables of whole columns, one under the other, each with the row names and
    a caption saying which columns it holds.
    """
    index_name = index_name or table.index.name or ""
    headers = [str(c) for c in table.columns]
    # Alignment by column, so that an empty cell does not break a column of numbers.
    kinds = [
        "num" if pd.api.types.is_numeric_dtype(table.iloc[:, i]) or table.iloc[:, i].map(_is_number).any() else "text"
        for i in range(table.shape[1])
    ]
    texts = [[cell(h, v) for v in table.iloc[:, i]] for i, h in enumerate(headers)]
    row_names = [str(name) for name in table.index]
    parts = column_parts(headers, texts, kinds, [index_name, *row_names])
    html_parts = []
    for part in parts:
        caption = (
            f"<caption>columns {part.start + 1}–{part.stop} of {len(headers)}</caption>\n" if len(parts) > 1 else ""
        )
        head = "".join(f"<th>{inline_markup(c)}</th>" for c in [index_name, *(headers[i] for i in part)])
        rows = []
        for r, name in enumerate(row_names):
            cells = [f"<th>{inline_markup(name)}</th>"]
            cells += [f'<td class="{kinds[i]}">{inline_markup(texts[i][r])}</td>' for i in part]
            rows.append("<tr>" + "".join(cells) + "</tr>")
        html_parts.append(
            f'<div class="scroll"><table>\n{caption}<thead><tr>{head}</tr></thead>\n<tbody>\n'
            + "\n".join(rows)
            + "\n</tbody></table></div>"
        )
    return "\n".join(html_parts)


def paragraphs(text: str, css_class: str) -> str:
    """Blank-line separated ``text`` as ``<p class=...>`` elements (nothing for empty text)."""
    parts = [p.strip() for p in re.split(r"\n\s*\n", text or "") if p.strip()]
    return "\n".join(f'<p class="{css_class}">{inline_markup(p)}</p>' for p in parts)


def table_page(
    table: pd.DataFrame,
    title: str,
    note: str = "",
    caption: str = "",
    index_name: str | None = None,
    cell: Callable[[str, object], str] = format_cell,
) -> str:
    """A page with the table, its note (how the numbers were measured) and a caption."""
    body = "\n".join(
        part
        for part in (paragraphs(caption, "caption"), table_html(table, index_name, cell), paragraphs(note, "note"))
        if part
    )
    return page(title, body)


def write_table_page(
    table: pd.DataFrame,
    path: str | Path,
    title: str,
    note: str = "",
    caption: str = "",
    index_name: str | None = None,
    cell: Callable[[str, object], str] = format_cell,
) -> Path:
    """Write :func:`table_page` to ``path`` (.html) atomically; return the path.

    ``caption``: what the table is, from its study's :class:`~robustsoup.report.captions.ReportSection`.
    """
    path = Path(path)
    write_text_atomic(path, table_page(table, title, note, caption, index_name, cell))
    return path


def figure_page(png: str | Path, title: str, caption: str = "", alt: str = "") -> str:
    """A page holding the PNG (as a data URI) with its caption under it."""
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    alt_text = html.escape(alt or title)
    figure = (
        f'<figure><img src="data:image/png;base64,{data}" alt="{alt_text}">\n'
        f"<figcaption>{'<br><br>'.join(inline_markup(p.strip()) for p in caption.split(chr(10) * 2) if p.strip())}"
        "</figcaption></figure>"
    )
    return page(title, figure)


def write_figure_page(png: str | Path, path: str | Path, title: str, caption: str = "") -> Path:
    """Write :func:`figure_page` of ``png`` to ``path`` (.html) atomically; return the path."""
    path = Path(path)
    write_text_atomic(path, figure_page(png, title, caption))
    return path
