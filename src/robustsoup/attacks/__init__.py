"""Attacks: PGD for training, AutoAttack's APGD for evaluation, projections onto Lp balls ∩ box."""

from .autoattack import apgd_ce_name, robust_correct_apgd_ce
from .pgd import pgd_attack
from .projections import NORMS, lp_norm, project

__all__ = ["NORMS", "apgd_ce_name", "lp_norm", "pgd_attack", "project", "robust_correct_apgd_ce"]
