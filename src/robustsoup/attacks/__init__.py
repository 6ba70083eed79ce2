"""Attacks: APGD and PGD for training, AutoAttack's APGD for evaluation, Lp-ball ∩ box projections.

Names load on first use (``lazy_loader``), so that the torch-free :mod:`robustsoup.attacks.protocol`
(the evaluation protocol's version, read when the workflow is parsed) imports without torch.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "apgd": ["apgd_train"],
        "autoattack": [
            "EVALUATION_MODES",
            "LARGEREPS_EPS",
            "AttackPlan",
            "attack_batch_size",
            "attack_plan",
            "largereps_iterations",
            "robust_correct",
        ],
        "pgd": ["pgd_attack"],
        "projections": ["NORMS", "lp_norm", "project"],
        "protocol": ["EVALUATION_PROTOCOL"],
    },
)
