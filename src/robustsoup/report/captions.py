"""What each table of a run shows, shown above it on its HTML page (keyed by the file's stem), and
where each page and CSV file is listed in Snakemake's HTML report (the workflow's `report_page`).

The table's own note, written from the data, says how its numbers were measured (ε, attack,
image counts); these captions say what the table is and which paper's table it mirrors.
"""

from __future__ import annotations

from .labels import model_label

TABLE_CAPTIONS = {
    "accuracy": (
        "Clean and robust accuracy of the L∞ parent, its fine-tunes towards L2, L1 and nominal training, and "
        "the soups on the configured lines, on the held-out test split. Robust accuracy per norm is measured "
        "with AutoAttack's APGD (the attack, iterations, ε and number of images are named under the table); "
        "union counts an image only if it is classified correctly clean and under every norm's attack. Cost: "
        "epochs × (attack steps + 1) forward-backward passes per training image; total cost adds the parent's. "
        "The counterpart of the robust-finetuning paper's tables (Croce & Hein 2022)."
    ),
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
    "distill": (
        "Robust distillation (Jain et al. 2023): clean accuracy and mean accuracy over the corruptions (and per "
        "corruption family) of the robust teacher, the original student, the student fully fine-tuned with the "
        "teacher's augmentation, and the multi-head student under each head-selection rule: ours (MC-dropout "
        "uncertainty and the KL divergence between the clean and robust heads, thresholds chosen on the "
        "adaptation split), always clean, always robust, always combined, and an oracle. The last columns give "
        "the cost: trainable parameters and training time (wall and CPU seconds) against full fine-tuning."
    ),
    "rws_table1": (
        "Robust Weight Signatures (Cai et al. 2023), the paper's Table 1: storage, clean accuracy (TA, after "
        "removing the patch) and mean corruption accuracy (RA) of the standard model, the data-augmentation "
        "baseline, all experts (oracle), and the standard model patched with signatures over all layers, the "
        "shallow k layers and quantized, plus the oracle-free mode."
    ),
    "rws_table4": (
        "Robust Weight Signatures, the paper's Table 4: per corruption, the standard model without and with its "
        "signature (the deployed variant), with the expert and the data-augmentation baseline for reference."
    ),
    "rws_oracle_free": (
        "Oracle-free patching: how often a corruption classifier on shallow features picks the right signature "
        "for a batch, and the accuracy that buys against the oracle (the right signature always) and the "
        "unpatched standard model."
    ),
    "rws_transfer": (
        "Transfer: signatures extracted against the standard model, patched onto other standard models of the "
        "same architecture (another seed, with its own or the shared initialization): does the gain carry over?"
    ),
    "findings": (
        "The papers' findings F1–F5 as verdicts this run computes: one row per checkable claim, with the "
        "paper's number where the setting is the paper's, ours, the effect, a 95 % paired bootstrap interval "
        "over the test images, n, the seeds and whether the claim holds."
    ),
    "benchmarks": (
        "What the run cost: wall time and peak memory (max RSS) of every job, from Snakemake's benchmark files, "
        "summed per rule, with the arithmetic (precision, memory format) and CPU the jobs ran with."
    ),
}


# Snakemake's HTML report: one folder (category) per study, numbered in reading order; within it the
# pages (subcategory "Tables" or "Figures") and the tables' CSV files, each listed under one label.
REPORT_CATEGORIES = {
    "lp": "1. Robust fine-tuning",
    "soups": "2. Model soups",
    "rws": "3. Robust weight signatures",
    "distill": "4. Robust distillation",
    "cost": "5. Run cost",
    "findings": "6. Findings",
}
CSV_SUBCATEGORY = "Tables (CSV download)"
# The label of each report item, by its caption's name (workflow/report/<name>.rst).
REPORT_LABELS = {
    "accuracy": "Clean and robust accuracy per model",
    "soups_shifts": "Soups per distribution shift",
    "soup_composition": "Composition of the soup chosen per shift",
    "soup_ternary": "Soups of three fine-tunes (ternary)",
    "rws_table1": "Storage, clean and corruption accuracy (Table 1)",
    "rws_table4": "Per corruption, without and with the signature (Table 4)",
    "rws_oracle_free": "Oracle-free patching",
    "rws_transfer": "Signatures transferred to other standard models",
    "rws_lambda": "Accuracy against the coefficient λ",
    "rws_layer_norms": "Signature norm per layer",
    "rws_compose": "Two signatures composed",
    "distill": "Accuracy and cost per model",
    "distill_figure": "Accuracy and cost per model at a glance",
    "benchmarks": "Wall time and memory per rule",
    "findings": "The papers' claims, checked (F1–F5)",
}


def report_place(study: str, subcategory: str, name: str, label: str | None = None) -> dict:
    """Where a report item is listed: its study's category, ``subcategory`` and one label, ``label`` or
    :data:`REPORT_LABELS` of ``name``."""
    if study not in REPORT_CATEGORIES or (label is None and name not in REPORT_LABELS):
        raise KeyError(
            f"report item {name!r} of study {study!r}: expected a study in {sorted(REPORT_CATEGORIES)} and a "
            f"name in {sorted(REPORT_LABELS)} (or a label); add it to robustsoup.report.captions"
        )
    return {
        "category": REPORT_CATEGORIES[study],
        "subcategory": subcategory,
        "labels": {"result": label or REPORT_LABELS[name]},
    }


def soup_line_label(a: str, b: str) -> str:
    """The report label of the soup-line figure from model ``a`` to ``b``."""
    return f"Soups on the line {model_label(a)} – {model_label(b)}"


def table_caption(stem: str) -> str:
    """The caption of the table file ``<stem>.html`` (empty for a table without one)."""
    return TABLE_CAPTIONS.get(stem, "")
