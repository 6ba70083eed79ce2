"""Names shared below the studies, torch-free (the workflow reads them when it parses). Soup ids are the
soups study's (:func:`robustsoup.soups.grid.soup_id`)."""

from __future__ import annotations

# The architecture prefix of a RobustBench model-zoo entry (robustbench:<name>).
ZOO_PREFIX = "robustbench:"
