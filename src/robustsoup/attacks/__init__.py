"""Attacks: APGD and PGD for training, AutoAttack's APGD for evaluation, Lp-ball ∩ box projections."""

from .apgd import apgd_train
from .autoattack import (
    EVALUATION_MODES,
    LARGEREPS_EPS,
    AttackPlan,
    attack_batch_size,
    attack_plan,
    largereps_iterations,
    robust_correct,
    robust_correct_apgd_ce,
)
from .pgd import pgd_attack
from .projections import NORMS, lp_norm, project

__all__ = [
    "EVALUATION_MODES",
    "LARGEREPS_EPS",
    "NORMS",
    "AttackPlan",
    "apgd_train",
    "attack_batch_size",
    "attack_plan",
    "largereps_iterations",
    "lp_norm",
    "pgd_attack",
    "project",
    "robust_correct",
    "robust_correct_apgd_ce",
]
