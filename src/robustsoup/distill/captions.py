"""What the robust distillation study's report items are called and what its table shows.

Torch-free: the workflow reads the labels when it parses (``workflow/rules/common.smk``).
"""

from __future__ import annotations

from ..report.captions import ReportSection

DISTILL_REPORT = ReportSection(
    category="4. Robust distillation",
    labels={
        "distill": "Accuracy and cost per model",
        "distill_figure": "Accuracy and cost per model at a glance",
    },
    captions={
        "distill": (
            "Robust distillation (Jain et al. 2023): clean accuracy and mean accuracy over the corruptions (and per "
            "corruption family) of the robust teacher, the original student, the student fully fine-tuned with the "
            "teacher's augmentation, and the multi-head student under each head-selection rule: ours (MC-dropout "
            "uncertainty and the KL divergence between the clean and robust heads, thresholds chosen on the "
            "adaptation split), always clean, always robust, always combined, and an oracle. The last columns give "
            "the cost: trainable parameters and training time (wall and CPU seconds) against full fine-tuning."
        ),
    },
)
