"""Findings F1 and F2 (robust fine-tuning, Croce & Hein 2022; soups along a line, Croce et al. 2023) as
checkable claims over a run's ledger and per-point files (:mod:`robustsoup.report.findings`). Torch-free."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ..config import parent_name
from ..report.findings import Claim, Ledger, PointStore, Term, measured_claim, not_computed
from .grid import grid_from_config

EVALSET = "test"
RECOVERED = 0.9  # F1: a fine-tune "recovers" the reference's robustness at ≥ 90 % of it


def _threat(norm) -> str | None:
    """The threat a fine-tune is trained for: its norm, ``none`` for nominal, None for several norms."""
    return "none" if norm == "none" else norm if isinstance(norm, str) else None


class _Measured:
    """Accuracy (ledger) and per-point results of the models' evaluations; ``union`` is counted per point."""

    def __init__(self, config: Mapping, ledger: Ledger, points: PointStore) -> None:
        self.ledger, self.points = ledger, points
        self.norms = list(config["evaluate"]["threats"])

    def term(self, model: str, threat: str, weight: float) -> Term | None:
        accuracy = self.ledger.accuracy(model, EVALSET, threat=threat, study="lp")
        if accuracy is None:
            return None
        return Term(weight, accuracy, self._points(model, threat), label=model)

    def _points(self, model: str, threat: str):
        if threat != "union":
            return self.points.get(model, EVALSET, threat=threat)
        parts = [self.points.get(model, EVALSET, threat=t) for t in ["none", *self.norms]]
        if any(p is None for p in parts):
            return None
        n = min(len(p) for p in parts[1:])
        return np.logical_and.reduce([p[:n] != 0 for p in parts]).astype(int)


def _pct(term: Term) -> str:
    return f"{100 * term.accuracy:.1f}"


def lp_findings(config: Mapping, ledger: Ledger, points: PointStore, sidecars: Mapping[str, Mapping]) -> list[Claim]:
    """F1 (each fine-tune against the parent in its norm, and against the from-scratch reference: the share
    of its robustness recovered and the cost ratio) and F2 (per line, the best interior soup against both
    ends in union accuracy; whether extrapolating helps)."""
    return _f1(config, ledger, points, sidecars) + _f2(config, ledger, points)


def _cost(sidecars: Mapping[str, Mapping], model: str):
    return ((sidecars.get(model) or {}).get("training") or {}).get("cost")


def _f1(config, ledger, points, sidecars) -> list[Claim]:
    measured, parent, rows = _Measured(config, ledger, points), parent_name(config), []
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
        rows.append(measured_claim("F1", claim, [ft, par], ours=f"{_pct(ft)} vs {_pct(par)}"))
        claim = f"{model} recovers ≥ {RECOVERED:.0%} of the from-scratch {shown} robustness"
        reference = references.get(threat)
        ref = measured.term(reference, threat, -RECOVERED) if reference else None
        if ref is None:
            why = f"no from-scratch reference for {shown} (config key references)" if not reference else ""
            rows.append(not_computed("F1", claim, why or f"no {shown} row of {reference} in metrics/all.tsv"))
            continue
        share = f"{ft.accuracy / ref.accuracy:.0%} recovered" if ref.accuracy else "the reference has none"
        ours = f"{_pct(ft)} vs {_pct(ref)} ({share})"
        own, scratch = _cost(sidecars, model), _cost(sidecars, reference)
        if own and scratch:
            ours += f"; cost {own}/{scratch} = {own / scratch:.2f}× ({(own + (_cost(sidecars, parent) or 0)) / scratch:.2f}× with the parent)"
        rows.append(measured_claim("F1", claim, [ft, ref], ours=ours))
    return rows


def _f2(config, ledger, points) -> list[Claim]:
    measured, rows = _Measured(config, ledger, points), []
    soups = list(grid_from_config(config))
    for a, b in config["soups"]["lines"]:
        line = [s for s in soups if s.line == f"{a}~{b}"]
        claim = f"an interior soup of {a}~{b} beats both ends in union accuracy"
        if len(measured.norms) < 2:
            rows.append(not_computed("F2", claim, "union accuracy needs two norms (evaluate.threats)"))
            continue
        ends = {a: measured.term(a, "union", 1.0), b: measured.term(b, "union", 1.0)}
        scored = {s.id: (s.position, measured.term(s.id, "union", 1.0)) for s in line}
        scored = {k: v for k, v in scored.items() if v[1] is not None}
        interior = {k: t for k, (w, t) in scored.items() if 0 < w < 1}
        if not interior or any(t is None for t in ends.values()):
            rows.append(not_computed("F2", claim, "no interior soup or end with a union row in metrics/all.tsv"))
            continue
        best = max(interior, key=lambda k: interior[k].accuracy)
        for end, term in ends.items():
            versus = Term(-1.0, term.accuracy, term.points, label=end)
            rows.append(
                measured_claim(
                    "F2",
                    f"the best interior soup of {a}~{b} ({best}) beats {end} in union accuracy",
                    [interior[best], versus],
                    ours=f"{_pct(interior[best])} vs {_pct(term)}",
                )
            )
        outside = {k: t for k, (w, t) in scored.items() if w < 0 or w > 1}
        claim = f"extrapolating {a}~{b} beyond its ends helps union accuracy"
        if not outside:
            rows.append(not_computed("F2", claim, "no extrapolated soup on the line (soups.weights)"))
            continue
        inside = {**interior, **ends}
        top_out = max(outside, key=lambda k: outside[k].accuracy)
        top_in = max(inside, key=lambda k: inside[k].accuracy)
        versus = Term(-1.0, inside[top_in].accuracy, inside[top_in].points, label=top_in)
        rows.append(
            measured_claim(
                "F2",
                f"{claim} (best outside {top_out} vs best within {top_in})",
                [outside[top_out], versus],
                ours=f"{_pct(outside[top_out])} vs {_pct(inside[top_in])}",
            )
        )
    return rows
