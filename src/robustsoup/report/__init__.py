"""Table and figure plumbing shared by every study's report: Markdown + CSV tables, PNG + PDF figures."""

from .figures import save_figure
from .tables import THREAT_COLUMNS, attack_summary, evaluation_note, to_markdown, write_table

__all__ = ["THREAT_COLUMNS", "attack_summary", "evaluation_note", "save_figure", "to_markdown", "write_table"]
