"""Where a report item is listed in Snakemake's HTML report, and the caption shown above a table's page.

Plumbing that knows no study: each study declares its own :class:`ReportSection` beside its report
(``robustsoup.<study>.captions``: its folder, the label of each item, its tables' captions), and the
workflow (``workflow/rules/common.smk``) maps each study's name to its section for :func:`report_place`.
The run-cost page, the report package's own, is :data:`COST_REPORT`.

The table's own note, written from the data, says how its numbers were measured (ε, attack,
image counts); the captions say what the table is and which paper's table it mirrors.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# Each table's CSV file is listed under this subcategory, beside the table's page.
CSV_SUBCATEGORY = "Tables (CSV download)"


@dataclass(frozen=True)
class ReportSection:
    """One folder (category) of Snakemake's HTML report: a study's, or the run cost's.

    ``category`` is numbered in reading order (``"3. Robust weight signatures"``); ``labels`` gives
    the label of each report item by its caption's name (``workflow/report/<name>.rst``);
    ``captions`` the caption shown above each table's HTML page, by the table file's stem.
    """

    category: str
    labels: Mapping[str, str]
    captions: Mapping[str, str] = field(default_factory=dict)

    def caption(self, stem: str) -> str:
        """The caption of the table file ``<stem>.html`` (empty for a table without one)."""
        return self.captions.get(stem, "")


def report_place(
    sections: Mapping[str, ReportSection], study: str, subcategory: str, name: str, label: str | None = None
) -> dict:
    """Where a report item is listed: the category of ``sections[study]``, ``subcategory`` and one label,
    ``label`` or the section's label of ``name``."""
    section = sections.get(study)
    if section is None or (label is None and name not in section.labels):
        raise KeyError(
            f"report item {name!r} of study {study!r}: expected a study in {sorted(sections)} and a name in "
            f"{sorted(section.labels) if section else []} (or a label); add it to the study's ReportSection "
            "(robustsoup.<study>.captions)"
        )
    return {
        "category": section.category,
        "subcategory": subcategory,
        "labels": {"result": label or section.labels[name]},
    }


COST_REPORT = ReportSection(
    category="5. Run cost",
    labels={
        "benchmarks": "Wall time and memory per rule",
    },
    captions={
        "benchmarks": (
            "What the run cost: wall time and peak memory (max RSS) of every job, from Snakemake's benchmark files, "
            "summed per rule, with the arithmetic (precision, memory format) and CPU the jobs ran with."
        ),
    },
)
