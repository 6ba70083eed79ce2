"""robustsoup: weight-space robustness for image classifiers.

Robust fine-tuning across Lp threat models, model soups, robust weight
signatures and robust distillation, as one reproducible Snakemake pipeline.
The package holds all logic; the workflow under ``workflow/`` only wires it.
"""

__version__ = "0.1.0"
