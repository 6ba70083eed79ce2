"""Robust fine-tuning (Croce & Hein 2022): the parent, the from-scratch references, the fine-tunes, every
model's evaluation, the accuracy table. The soups between the models are :mod:`robustsoup.soups`'."""
