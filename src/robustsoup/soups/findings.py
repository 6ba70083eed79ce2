"""Findings F2 (soups along a line, Croce et al. 2023, Fig. 2) and F3 (soups per distribution shift, Sec. 4)
as checkable claims over a run's ledger and per-point results (:mod:`robustsoup.report.findings`): the line
soups' of evaluate_model, evaluate_soups_shifts'. Torch-free."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ..config import base_model_names
from ..report.findings import Claim, Ledger, ModelTerms, PointStore, Term, measured_claim, not_computed, percent
from .grid import grid_from_config

STUDY = "soups-shifts"
# The poster's table (ImageNet, ViT-B/16, grid search on 1,000 images): dataset-specific soups, the single
# soup and the ×4 ensemble per column; our shift names → its columns.
POSTER = {
    "clean": (82.29, 82.49, 81.31),
    "imagenet-real": (87.89, 87.85, 86.97),
    "imagenet-v2": (71.95, 71.99, 70.21),
    "imagenet-a": (38.27, 34.31, 23.13),
    "imagenet-r": (56.39, 53.84, 54.82),
    "imagenet-sketch": (40.73, 39.84, 39.51),
    "cue-conflict": (67.03, 38.52, 56.02),
    "imagenet-c": (69.34, 66.82, 68.17),
    "mean": (64.24, 59.46, 60.02),
}
COMPARATORS = {"single soup": 1, "×4 ensemble": 2}  # their column in POSTER


def _specific(rows: pd.DataFrame, evalset: str) -> str | None:
    """The grid-search soup chosen for ``evalset`` on the most adaptation images (the poster's choice)."""
    prefix = f"soup-{evalset}-grid-k"
    ks = [int(m.removeprefix(prefix)) for m in set(rows["model"]) if m.startswith(prefix)]
    return f"{prefix}{max(ks)}" if ks else None


def soups_findings(config: Mapping, ledger: Ledger, points: PointStore) -> list[Claim]:
    """F3: the per-shift soups (grid search, largest k) against the best single base model, the single
    soup and the ×4 ensemble, as the mean over shifts and on each shift."""
    rows = ledger.rows(STUDY)
    if rows.empty:
        return [not_computed("F3", "per-shift soups beat the alternatives", "no soups-shifts rows in metrics/all.tsv")]
    evalsets = list(dict.fromkeys(rows["evalset"]))
    per_shift = rows.pivot_table(index="model", columns="evalset", values="accuracy", aggfunc="mean")
    bases = [m for m in base_model_names(config) if m in per_shift.index]
    best = max(bases, key=lambda m: per_shift.loc[m, evalsets].mean()) if bases else None
    fours = sorted(m for m in per_shift.index if m.startswith("ensemble-") and m.count("+") == 3)
    comparators = {
        "the best single base model": best,
        "the single soup": "soup-single" if "soup-single" in per_shift.index else None,
        "the ×4 ensemble": fours[0] if fours else None,
    }
    pools = set(config["data"]["shifts"])
    out = [_precondition(rows, ledger, points, per_shift, bases, best, evalsets, pools)]
    for text, other in comparators.items():
        for scope in ["mean", *evalsets]:
            where = "the mean over shifts" if scope == "mean" else f"shift {scope}"
            claim = f"per-shift soups beat {text} on {where}"
            if other is None:
                why = "no ×4 ensemble (soups.ensembles)" if "ensemble" in text else f"no {text} rows"
                out.append(not_computed("F3", claim, why))
                continue
            shifts = evalsets if scope == "mean" else [scope]
            terms, ours_a, ours_b, missing = [], [], [], []
            for evalset in shifts:
                soup = _specific(rows, evalset)
                if soup is None:
                    missing.append(evalset)
                    continue
                units = rows[(rows["evalset"] == evalset) & (rows["model"] == soup)]
                pool = evalset if evalset in pools else "test"
                for unit in units.itertuples(index=False):
                    for model, sign in ((soup, 1.0), (other, -1.0)):
                        accuracy = ledger.accuracy(model, evalset, unit.corruption, unit.severity, study=STUDY)
                        if accuracy is None:
                            missing.append(f"{model} on {evalset}")
                            continue
                        got = points.get(model, evalset, unit.corruption, unit.severity)
                        weight = sign / len(units) / len(shifts)
                        terms.append(Term(weight, accuracy, got, pool, f"{model} on {evalset}"))
                ours_a.append(per_shift.loc[soup, evalset])
                ours_b.append(per_shift.loc[other, evalset] if evalset in per_shift.columns else float("nan"))
            if missing:
                out.append(not_computed("F3", claim, f"not measured: {', '.join(missing)}"))
                continue
            a, b = 100 * sum(ours_a) / len(ours_a), 100 * sum(ours_b) / len(ours_b)
            named = f" ({other})" if other == best else ""  # a seed's own best model: its name is a number's label
            out.append(
                measured_claim("F3", claim, terms, ours=f"{a:.1f} vs {b:.1f}{named}", paper=_paper(config, scope, text))
            )
    return out


def _precondition(
    rows: pd.DataFrame,
    ledger: Ledger,
    points: PointStore,
    per_shift: pd.DataFrame,
    bases: list[str],
    best: str | None,
    evalsets: list[str],
    pools: set[str],
) -> Claim:
    """P3 of docs/reproducing.md's registered design: on some shift another base model beats the best
    single base model; otherwise no soup can beat it by choosing per shift, and F3 is untestable here.
    The shift and model are the largest gain on the test points themselves, so the interval is optimistic."""
    claim = "precondition P3: on some shift another base model beats the best single base model (else F3 is untestable)"
    others = [m for m in bases if m != best]
    if best is None or not others:
        return not_computed("F3", claim, "fewer than two base models in the soups-shifts rows")
    gain = {(e, m): per_shift.loc[m, e] - per_shift.loc[best, e] for e in evalsets for m in others}
    evalset, model = max(gain, key=gain.get)
    units = rows[(rows["evalset"] == evalset) & (rows["model"] == best)]
    pool = evalset if evalset in pools else "test"
    terms = []
    for unit in units.itertuples(index=False):
        for name, sign in ((model, 1.0), (best, -1.0)):
            accuracy = ledger.accuracy(name, evalset, unit.corruption, unit.severity, study=STUDY)
            if accuracy is None:
                return not_computed("F3", claim, f"not measured: {name} on {evalset}")
            got = points.get(name, evalset, unit.corruption, unit.severity)
            terms.append(Term(sign / len(units), accuracy, got, pool, f"{name} on {evalset}"))
    a, b = 100 * per_shift.loc[model, evalset], 100 * per_shift.loc[best, evalset]
    return measured_claim("F3", claim, terms, ours=f"{model} {a:.1f} vs {best} {b:.1f} on {evalset}")


def _paper(config: Mapping, scope: str, text: str) -> str:
    """The poster's difference where our setting is its (ImageNet; the comparators it has)."""
    column = next((c for name, c in COMPARATORS.items() if name in text), None)
    if config["dataset"] != "imagenet" or column is None or scope not in POSTER:
        return ""
    ours, theirs = POSTER[scope][0], POSTER[scope][column]
    return f"{ours - theirs:+.2f} ({ours:.2f} vs {theirs:.2f})"


def soup_line_findings(config: Mapping, ledger: Ledger, points: PointStore) -> list[Claim]:
    """F2 (Croce et al. 2023, Fig. 2): per line, the best interior soup against both ends in union accuracy,
    and whether extrapolating beyond the ends helps, from the models' evaluations (rule evaluate_model)."""
    measured, rows = ModelTerms(config, ledger, points), []
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
                    f"the best interior soup of {a}~{b} beats {end} in union accuracy",
                    [interior[best], versus],
                    ours=f"{best} {percent(interior[best])} vs {percent(term)}",
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
                claim,
                [outside[top_out], versus],
                ours=f"best outside {top_out} {percent(outside[top_out])} vs best within {top_in} "
                f"{percent(inside[top_in])}",
            )
        )
    return rows
