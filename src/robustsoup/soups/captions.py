"""What the model-soups study's report items are called and what its table shows.

Torch-free: the workflow reads the labels when it parses (``workflow/rules/common.smk``).
"""

from __future__ import annotations

from ..report.captions import ReportSection
from ..report.labels import model_label

SOUPS_REPORT = ReportSection(
    category="2. Model soups",
    labels={
        "soups_shifts": "Soups per distribution shift",
        "soup_composition": "Composition of the soup chosen per shift",
        "soup_ternary": "Soups of three fine-tunes (ternary)",
    },
    captions={
        "soups_shifts": (
            "Accuracy on held-out images of each distribution shift (clean data and the corruption families, each a "
            "mixture of the configured corruptions and severities) for the base models, output ensembles (×2, ×4 "
            "FLOPs), one single soup chosen for all shifts, and a soup chosen per shift on its first k adaptation "
            "images by each selection method (grid search as in the paper; successive halving, greedy soup and "
            "learned weights beyond it), and label-free selection (minimum entropy, agreement with the output "
            "ensemble, BatchNorm-statistics distance, SHOT's information maximization) on the same k images "
            "without labels, each with a '+ fallback' row that uses the base model most accurate on the clean "
            "adaptation images where the label-free picks disagree; Δ columns give the gap to grid search and to "
            "the best base model of each shift (an oracle). Forward passes count the soup × image evaluations the "
            "choice spent. The counterpart of the soups paper's Table 1 (Croce et al. 2023)."
        ),
    },
)


def soup_line_label(a: str, b: str) -> str:
    """The report label of the soup-line figure from model ``a`` to ``b`` (listed under the soups' folder)."""
    return f"Soups on the line {model_label(a)} – {model_label(b)}"
