"""Robust fine-tuning (Croce & Hein 2022) and its soup lines: the parent, the fine-tunes, the soups
along lines between them, the accuracy table."""
