"""Soups per distribution shift (Croce et al. 2023, Sec. 4): search over the simplex, stages, report."""
