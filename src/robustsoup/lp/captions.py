"""What the robust fine-tuning study's report items are called and what its table shows.

Torch-free: the workflow reads the labels when it parses (``workflow/rules/common.smk``).
"""

from __future__ import annotations

from ..report.captions import ReportSection

LP_REPORT = ReportSection(
    category="1. Robust fine-tuning",
    labels={
        "accuracy": "Clean and robust accuracy per model",
    },
    captions={
        "accuracy": (
            "Clean and robust accuracy of the L∞ parent, its fine-tunes towards L2, L1 and nominal training, and "
            "the soups on the configured lines, on the held-out test split. Robust accuracy per norm is measured "
            "with AutoAttack's APGD (the attack, iterations, ε and number of images are named under the table); "
            "union counts an image only if it is classified correctly clean and under every norm's attack. Cost: "
            "epochs × (attack steps + 1) forward-backward passes per training image; total cost adds the parent's. "
            "The counterpart of the robust-finetuning paper's tables (Croce & Hein 2022)."
        ),
    },
)
