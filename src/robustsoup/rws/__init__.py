"""Robust Weight Signatures (Cai et al. 2023): signatures, their config and names, stages, report, CLI."""
