"""Robust distillation (Jain et al. 2023): the multi-head method, its config and names, stages, report."""
