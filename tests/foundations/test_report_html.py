"""Tables and figures as HTML pages, and how Snakemake's HTML report shows them: inline, captioned."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from robustsoup.report.benchmarks import summarize_benchmarks
from robustsoup.report.html import figure_page, table_page
from robustsoup.report.tables import write_table

from conftest import REPO


class Cells(HTMLParser):
    """Rows of every ``<table>`` in a page, each cell's text (``th`` and ``td`` alike)."""

    def __init__(self):
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def table_rows(page: str) -> list[list[str]]:
    parser = Cells()
    parser.feed(page)
    return parser.rows


def accuracy_frame() -> pd.DataFrame:
    frame = pd.DataFrame(
        {"weights": ["", "0.5·linf + 0.5·linf-l2"], "clean": [99.11, 98.9], "Linf": [87.5, np.nan]},
        index=pd.Index(["linf", "soup-linf_0.5-linf-l2_0.5"], name="model"),
    )
    frame["cost"] = pd.array([165, None], dtype="Int64")
    return frame


def test_write_table_writes_a_page_with_the_markdown_numbers(tmp_path):
    csv_path, md_path, html_path = write_table(accuracy_frame(), tmp_path / "accuracy", "Accuracy", "n=160, `apgd`")
    assert (csv_path.suffix, md_path.suffix, html_path.suffix) == (".csv", ".md", ".html")
    page = html_path.read_text(encoding="utf-8")
    rows = table_rows(page)
    markdown = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in md_path.read_text(encoding="utf-8").splitlines()
        if line.startswith("| ")
    ]
    assert rows == markdown  # the page shows exactly the Markdown table's cells
    assert rows[1] == ["linf", "", "99.1", "87.5", "165"] and rows[2][3:] == ["", ""]
    assert "<h1>Accuracy</h1>" in page and "<code>apgd</code>" in page and "Accuracy in %. n=160" in page
    assert page.count('<td class="num"></td>') == 2  # a missing number stays right-aligned with its column


def test_table_page_escapes_text_and_right_aligns_numbers():
    frame = pd.DataFrame({"name": ["<b>x</b>"], "value": [1.5]}, index=pd.Index(["a&b"], name="row"))
    page = table_page(frame, "T <1>", "note")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page and "a&amp;b" in page
    assert '<td class="num">1.5</td>' in page
    assert '<td class="text">' in page


def test_figure_page_embeds_the_png_with_its_caption(tmp_path):
    png = tmp_path / "f.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = figure_page(png, "Title", "First paragraph.\n\nSecond, with `code`.")
    encoded = re.search(r'src="data:image/png;base64,([^"]+)"', page).group(1)
    assert base64.b64decode(encoded) == png.read_bytes()
    assert "<figcaption>First paragraph.<br><br>Second, with <code>code</code>.</figcaption>" in page


def test_benchmark_summary_writes_its_page(tmp_path):
    bench, logs = tmp_path / "benchmarks", tmp_path / "logs"
    for rule, seconds in (("pretrain", 12.5), ("report", 1.5)):
        (bench / rule).mkdir(parents=True)
        (bench / rule / "digits.tsv").write_text(f"s\tmax_rss\n{seconds}\t300.0\n")
        (logs / rule).mkdir(parents=True)
        (logs / rule / "digits.log").write_text("robustsoup-job: inside_s=1.0 precision=float32\n")
    summarize_benchmarks(bench, tmp_path / "benchmarks.csv", logs)
    rows = table_rows((tmp_path / "benchmarks.html").read_text(encoding="utf-8"))
    assert rows[0][:3] == ["rule", "jobs", "total s"]  # the CSV's column names, with spaces so that they wrap
    assert [r[0] for r in rows[1:]] == ["pretrain", "report"] and rows[1][2] == "12.5"


SNAKEFILE = """
from robustsoup.report.html import write_table_page
import pandas as pd

report: "workflow.rst"

rule all:
    input: "tables/accuracy.html", "tables/accuracy.csv"

rule table:
    output:
        page=report("tables/accuracy.html", caption="caption.rst", category="1. Robust fine-tuning",
                    subcategory="Tables", labels={"item": "Accuracy per threat model"}),
        csv=report("tables/accuracy.csv", category="1. Robust fine-tuning", subcategory="Data (CSV)",
                   labels={"item": "Accuracy per threat model"}),
    run:
        frame = pd.DataFrame({"clean": [99.1], "Linf": [87.5]}, index=pd.Index(["linf"], name="model"))
        write_table_page(frame, output.page, "Accuracy", "n=160")
        frame.to_csv(output.csv)
"""


@pytest.mark.workflow
def test_snakemake_report_shows_an_html_table_inline_with_its_caption(tmp_path):
    """Snakemake 9's report: our table page is a text/html result (shown inline), a CSV only a download."""
    (tmp_path / "Snakefile").write_text(SNAKEFILE)
    (tmp_path / "caption.rst").write_text("Clean and robust accuracy, ε in the note.\n")
    (tmp_path / "workflow.rst").write_text("A test workflow.\n")
    base = [sys.executable, "-m", "snakemake", "--directory", str(tmp_path), "--snakefile", str(tmp_path / "Snakefile")]
    run = subprocess.run([*base, "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = tmp_path / "report.html"
    made = subprocess.run([*base, "--report", str(report)], capture_output=True, text=True, timeout=300)
    assert made.returncode == 0, made.stderr[-3000:]
    html = report.read_text(encoding="utf-8")
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S).group(1))
    page = next(r for r in results.values() if r["filename"] == "accuracy.html")
    assert page["mime_type"] == "text/html" and page["labels"] == {"item": "Accuracy per threat model"}
    assert "ε in the note" in page["caption"]
    kind, encoded = page["data_uri"].split(",", 1)
    assert kind.startswith("data:text/html")
    rows = table_rows(base64.b64decode(encoded).decode("utf-8"))
    assert rows == [["model", "clean", "Linf"], ["linf", "99.1", "87.5"]]
    csv = next(r for r in results.values() if r["filename"] == "accuracy.csv")
    assert csv["mime_type"] == "text/csv"
    # …and the page the report embeds is ours as written: a whole document that needs nothing outside itself
    # (the report opens it from a data URI, where a relative or remote link resolves to nothing)
    embedded = base64.b64decode(encoded).decode("utf-8")
    assert embedded == (tmp_path / "tables" / "accuracy.html").read_text(encoding="utf-8")
    assert embedded.startswith("<!DOCTYPE html>") and '<meta charset="utf-8">' in embedded
    assert "<title>Accuracy</title>" in embedded and "n=160" in embedded and "<style>" in embedded
    assert not re.search(r"""\b(src|href)\s*=|@import|url\(""", embedded), "the page links outside itself"


def test_rws_table_page_shows_the_markdown_cells(tmp_path):
    from robustsoup.rws.report import write_table as write_rws_table

    frame = pd.DataFrame(
        {
            "storage (bytes)": [1234567, 2345678],
            "× standard": [1.0, 1.9],
            "TA": [91.234, np.nan],
            "Diff.": [0.5, -1.25],
        },
        index=pd.Index(["Standard", "Standard + RWS"], name="method"),
    )
    paths = [tmp_path / f"rws_table1.{kind}" for kind in ("csv", "md", "html")]
    written = write_rws_table(frame, *paths, "Table 1", "Accuracy in %.", "method")
    assert written == paths
    markdown = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in paths[1].read_text(encoding="utf-8").splitlines()
        if line.startswith("| ")
    ]
    page = paths[2].read_text(encoding="utf-8")
    assert table_rows(page) == markdown
    assert markdown[1] == ["Standard", "1,234,567", "1.000", "91.23", "+0.50"] and markdown[2][3:] == ["", "-1.25"]
    assert "Robust Weight Signatures (Cai et al. 2023), the paper's Table 1" in page  # its caption, by the stem


def _report_sections():
    """Every folder of the HTML report, by the name the workflow gives it (``REPORT`` in common.smk)."""
    from robustsoup.distill.captions import DISTILL_REPORT
    from robustsoup.lp.captions import LP_REPORT
    from robustsoup.report.captions import COST_REPORT
    from robustsoup.report.findings import FINDINGS_REPORT
    from robustsoup.rws.captions import RWS_REPORT
    from robustsoup.soups.captions import SOUPS_REPORT

    sections = {
        "lp": LP_REPORT,
        "soups": SOUPS_REPORT,
        "rws": RWS_REPORT,
        "distill": DISTILL_REPORT,
        "cost": COST_REPORT,
        "findings": FINDINGS_REPORT,
    }
    common = (REPO / "workflow" / "rules" / "common.smk").read_text(encoding="utf-8")
    wired = re.search(r"^REPORT = \{(.*?)^\}$", common, re.M | re.S).group(1)
    assert dict(re.findall(r'"(\w+)": (\w+)', wired)) == {k: f"{k.upper()}_REPORT" for k in sections}
    return sections


def test_report_items_have_a_study_folder_and_one_label():
    from robustsoup.report.captions import report_place
    from robustsoup.soups.captions import soup_line_label

    sections = _report_sections()
    place = report_place(sections, "rws", "Tables", "rws_table1")
    assert place == {
        "category": "3. Robust weight signatures",
        "subcategory": "Tables",
        "labels": {"result": sections["rws"].labels["rws_table1"]},
    }
    assert report_place(sections, "soups", "Figures", "soup_line", "x")["labels"] == {"result": "x"}
    assert soup_line_label("linf", "linf-l2") == "Soups on the line L∞ parent – L∞→L2 fine-tune"
    categories = [section.category for section in sections.values()]
    assert sorted(categories) == categories  # numbered in reading order
    with pytest.raises(KeyError, match="add it to the study's ReportSection"):
        report_place(sections, "rws", "Tables", "no_such_table")
    with pytest.raises(KeyError, match="expected a study in"):
        report_place(sections, "no_study", "Tables", "accuracy")


def test_every_report_caption_file_exists_and_every_label_has_one():
    captions = REPO / "workflow" / "report"
    labels = [name for section in _report_sections().values() for name in section.labels]
    assert len(labels) == len(set(labels))  # one label per caption name
    for name in [*labels, "soup_line", "data_csv"]:
        assert (captions / f"{name}.rst").read_text(encoding="utf-8").strip(), name


def test_a_table_wider_than_the_report_is_split_into_balanced_parts_of_whole_columns():
    from robustsoup.report.html import TABLE_WIDTH_CH, column_parts

    wide = pd.DataFrame(
        {f"shift number {i}": [10.0 * i, 1.5] for i in range(20)}, index=pd.Index(["linf", "soup-a"], name="model")
    )
    page = table_page(wide, "Wide")
    assert page.count("<table>") == 2 and "<caption>columns 1–10 of 20</caption>" in page
    rows = table_rows(page)
    headers = [r for r in rows if r[0] == "model"]
    assert [h[1:] for h in headers] == [list(wide.columns[:10]), list(wide.columns[10:])]  # each column once
    assert [r[0] for r in rows if r[0] != "model"] == ["linf", "soup-a"] * 2  # every part keeps the row names
    narrow = accuracy_frame()
    assert "<caption>" not in table_page(narrow, "Narrow")
    # a text cell wraps, a number does not; a single column wider than the page is a part of its own
    texts = [["a b " * 40], ["1.0"], ["x" * (TABLE_WIDTH_CH + 5)]]
    assert column_parts(["words", "n", "long"], texts, ["text", "num", "text"], ["model"]) == [range(0, 2), range(2, 3)]


def _render_first_page(categories) -> str:
    """workflow/report/workflow.rst as Snakemake renders it (Jinja with its settings, then docutils)."""
    from types import SimpleNamespace

    from docutils.core import publish_parts
    from jinja2 import Environment

    config = {
        "dataset": "digits",
        "model": {"architecture": "preact_resnet_small", "width": 4},
        "seed": 0,
        "evaluate": {"threats": ["Linf"]},
        "threats": {"Linf": 0.1},
    }
    # the link targets Snakemake appends (snakemake/report/__init__.py: rst_links), for the categories
    links = "\n\n{% for cat, r in categories|dictsort %}\n.. _{{ cat.name }}: javascript:app.showCategory('x')\n{% endfor %}\n"
    text = (REPO / "workflow" / "report" / "workflow.rst").read_text(encoding="utf-8") + links
    rendered = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text)
    rst = rendered.render(snakemake=SimpleNamespace(config=config), categories=categories, files=[])
    return publish_parts(rst, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["html_body"]


def test_the_first_page_opens_every_table_and_figure_of_the_run_in_one_click():
    """Generic over what the run has: a study's new table (here a findings table) is linked without a word."""
    import urllib.parse
    from functools import total_ordering
    from types import SimpleNamespace

    @total_ordering
    class Category(SimpleNamespace):
        def __lt__(self, other):
            return self.name < other.name

        def __hash__(self):
            return hash(self.name)

    def record(path, mime, label):
        return SimpleNamespace(path=Path(path), mime=mime, labels={"result": label}, name=Path(path).name)

    categories = {
        Category(name="1. Robust fine-tuning"): {
            Category(name="Tables"): [record("results/digits/tables/accuracy.html", "text/html", "Accuracy")],
            Category(name="Tables (CSV download)"): [record("results/digits/tables/accuracy.csv", "text/csv", "x")],
            Category(name="Figures"): [record("results/digits/figures/line.html", "text/html", "Soups on the line")],
        },
        Category(name="6. Findings"): {
            Category(name="Tables"): [record("results/digits/tables/findings.html", "text/html", "What holds")],
        },
    }
    page = _render_first_page(categories)
    links = {
        urllib.parse.unquote(href): text
        for href, text in re.findall(
            r'<a class="reference external" href="(javascript:app\.setView[^"]*)">([^<]*)</a>', page
        )
    }
    opened = {re.search(r"resultPath:'([^']+)'", href).group(1): text for href, text in links.items()}
    assert opened == {
        "results/digits/tables/accuracy.html": "Accuracy",
        "results/digits/figures/line.html": "Soups on the line",
        "results/digits/tables/findings.html": "What holds",
    }  # every page, no CSV
    accuracy = next(h for h in links if "accuracy.html" in h)
    assert (
        "content:'html'" in accuracy
        and "contentPath:results['results/digits/tables/accuracy.html'].data_uri" in accuracy
    )
    assert "category:'1. Robust fine-tuning'" in accuracy and "subcategory:'Tables'" in accuracy
    assert page.index(">Accuracy<") < page.index(">Soups on the line<")  # a study's tables, then its figures
    assert "System Message" not in page
