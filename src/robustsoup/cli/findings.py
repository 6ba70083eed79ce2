"""``robustsoup findings RESULTS_DIR [RESULTS_DIR …]``: the findings table (F1–F5) of a run, recomputed
from its folder; several folders (one run per seed) are combined, the intervals carrying their spread.

The rule ``report_findings`` writes the same table (:func:`robustsoup.findings.findings_table`): edit or
merge a run's ``metrics/all.tsv`` and this recomputes every effect, interval and verdict.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..findings import findings_table
from ..report.findings import findings_markdown, write_findings


def cmd_findings(args: argparse.Namespace) -> int:
    try:
        table = findings_table(args.results)
    except (FileNotFoundError, ValueError) as error:
        print(f"robustsoup: error: {error}", file=sys.stderr)
        return 2
    if args.output:
        stem = Path(args.output)
        write_findings(table, stem.with_suffix(".csv"), stem.with_suffix(".md"), stem.with_suffix(".html"))
    print(table.to_csv(index=False) if args.csv else findings_markdown(table), end="")
    return 0


def add_findings_command(commands) -> None:
    findings = commands.add_parser(
        "findings", help="the papers' claims F1–F5 as verdicts, recomputed from a run's results folder"
    )
    findings.add_argument(
        "results",
        type=Path,
        nargs="+",
        help="a run's folder results/<dataset> (config.resolved.yaml inside); several: one run per seed, combined",
    )
    findings.add_argument("--csv", action="store_true", help="print the CSV (every number) instead of Markdown")
    findings.add_argument("-o", "--output", type=Path, help="also write OUTPUT.{csv,md,html}")
    findings.set_defaults(run=cmd_findings)
