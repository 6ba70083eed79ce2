"""Tables and figures from tidy metric files; nothing here computes a metric."""

from .figures import plot_soup_line, soup_line_points
from .tables import accuracy_table, add_training_columns, attack_summary, evaluation_note, to_markdown, write_table

__all__ = ["accuracy_table", "add_training_columns", "attack_summary", "evaluation_note", "plot_soup_line", "soup_line_points", "to_markdown", "write_table"]
