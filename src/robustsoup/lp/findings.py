"""Finding F1 (robust fine-tuning, Croce & Hein 2022) as checkable claims over a run's ledger and per-point
files (:mod:`robustsoup.report.findings`); F2, the soups along a line, is the soups study's. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping

from ..config import parent_name
from ..report.findings import Claim, Ledger, ModelTerms, PointStore, measured_claim, not_computed, percent

RECOVERED = 0.9  # F1: a fine-tune "recovers" the reference's robustness at ≥ 90 % of it


def _threat(norm) -> str | None:
    """The threat a fine-tune is trained for: its norm, ``none`` for nominal, None for several norms."""
    return "none" if norm == "none" else norm if isinstance(norm, str) else None


def lp_findings(config: Mapping, ledger: Ledger, points: PointStore, sidecars: Mapping[str, Mapping]) -> list[Claim]:
    """F1: each fine-tune against the parent in its norm, and against the from-scratch reference (the share
    of its robustness recovered and the cost ratio)."""
    return _f1(config, ledger, points, sidecars)


def _cost(sidecars: Mapping[str, Mapping], model: str):
    return ((sidecars.get(model) or {}).get("training") or {}).get("cost")


def _f1(config, ledger, points, sidecars) -> list[Claim]:
    measured, parent, rows = ModelTerms(config, ledger, points), parent_name(config), []
    references = {norm: f"scratch-{norm.lower()}" for norm in config["references"]}
    for target, spec in config["finetune"].items():
        model, threat = f"{parent}-{target}", _threat(spec["norm"])
        shown = "clean" if threat == "none" else threat
        claim = f"{model} ({spec['epochs']} ep) beats the parent {parent} in {shown} accuracy"
        if threat is None:
            rows.append(not_computed("F1", claim, "a fine-tune towards several norms has no one norm"))
            continue
        ft, par = measured.term(model, threat, 1.0), measured.term(parent, threat, -1.0)
        if ft is None or par is None:
            rows.append(not_computed("F1", claim, f"no {shown} row of {model} or {parent} in metrics/all.tsv"))
            continue
        rows.append(measured_claim("F1", claim, [ft, par], ours=f"{percent(ft)} vs {percent(par)}"))
        claim = f"{model} recovers ≥ {RECOVERED:.0%} of the from-scratch {shown} robustness"
        reference = references.get(threat)
        ref = measured.term(reference, threat, -RECOVERED) if reference else None
        if ref is None:
            why = f"no from-scratch reference for {shown} (config key references)" if not reference else ""
            rows.append(not_computed("F1", claim, why or f"no {shown} row of {reference} in metrics/all.tsv"))
            continue
        share = f"{ft.accuracy / ref.accuracy:.0%} recovered" if ref.accuracy else "the reference has none"
        ours = f"{percent(ft)} vs {percent(ref)} ({share})"
        own, scratch = _cost(sidecars, model), _cost(sidecars, reference)
        if own and scratch:
            ours += f"; cost {own}/{scratch} = {own / scratch:.2f}× ({(own + (_cost(sidecars, parent) or 0)) / scratch:.2f}× with the parent)"
        rows.append(measured_claim("F1", claim, [ft, ref], ours=ours))
    return rows
