"""Finding F5 (robust distillation, Jain et al. 2023) as checkable claims over a run's ledger and the
per-point results of evaluate_distilled (:mod:`robustsoup.report.findings`). Torch-free."""

from __future__ import annotations

from collections.abc import Mapping

from ..report.findings import Ledger, PointStore, Term, measured_claim, not_computed
from .config import FINETUNED, MULTIHEAD, STUDENT, TEACHER

STUDY, EVALSET = "distill", "test"
WITHIN = 1.0  # points: "clean accuracy kept" and "as much as full fine-tuning" allow this much less


def distill_findings(
    config: Mapping, ledger: Ledger, points: PointStore, sidecars: Mapping[str, Mapping]
) -> list[dict]:
    """F5: the multi-head student keeps the student's clean accuracy within 1 point, gains corruption
    accuracy over the student, and gains within 1 point of full fine-tuning, with its parameter fraction.
    First the precondition P5 (docs/reproducing.md's registered design): the teacher is more robust on
    the corruptions than the student; where it does not hold, F5 is not tested by this run."""
    claims = {
        "teacher": (
            "precondition P5: the teacher's corruption accuracy is above the student's (else F5 is untested)",
            TEACHER,
            STUDENT,
        ),
        "clean": (
            f"the multi-head student keeps the student's clean accuracy (within {WITHIN:g} point)",
            MULTIHEAD,
            STUDENT,
        ),
        "gain": ("the multi-head student gains corruption accuracy over the student", MULTIHEAD, STUDENT),
        "full": (
            f"the multi-head student's corruption accuracy matches full fine-tuning's (within {WITHIN:g} point)",
            MULTIHEAD,
            FINETUNED,
        ),
    }
    if not config["distill"]["enabled"]:
        return [
            not_computed("F5", c, "the distillation study is disabled (distill.enabled)") for c, _, _ in claims.values()
        ]
    rows = ledger.rows(STUDY, model=MULTIHEAD)
    units = [(r.corruption, int(r.severity)) for r in rows.itertuples(index=False) if r.corruption != "none"]
    params = _fraction(sidecars)
    out = []
    for kind, (claim, first, other) in claims.items():
        scope = [("none", 0)] if kind == "clean" else units
        terms, missing = [], []
        for corruption, severity in scope:
            for model, sign in ((first, 1.0), (other, -1.0)):
                accuracy = ledger.accuracy(model, EVALSET, corruption, severity, study=STUDY)
                if accuracy is None:
                    missing.append(f"{model} on {corruption}/{severity}")
                    continue
                got = points.get(model, EVALSET, corruption, severity)
                terms.append(Term(sign / len(scope), accuracy, got, label=f"{model} on {corruption}/{severity}"))
        if missing or not terms:
            out.append(not_computed("F5", claim, f"not measured: {', '.join(missing) or 'no corrupted rows'}"))
            continue
        mine = 100 * sum(t.weight * t.accuracy for t in terms if t.weight > 0)
        theirs = 0.0 - 100 * sum(t.weight * t.accuracy for t in terms if t.weight < 0)  # 0.0 −: never "−0.0"
        what = "clean" if kind == "clean" else "corruptions"
        ours = f"{what} {mine:.1f} vs {theirs:.1f}" + (f"; {params}" if params and first == MULTIHEAD else "")
        threshold = 0.0 if kind in ("gain", "teacher") else -WITHIN
        out.append(measured_claim("F5", claim, terms, threshold=threshold, ours=ours))
    return out


def _fraction(sidecars: Mapping[str, Mapping]) -> str:
    """The multi-head student's trainable parameters as a share of full fine-tuning's (from the sidecars)."""
    mine = ((sidecars.get(MULTIHEAD) or {}).get("metrics") or {}).get("trainable_parameters")
    full = ((sidecars.get(FINETUNED) or {}).get("metrics") or {}).get("trainable_parameters")
    return f"{mine:,} of {full:,} trainable parameters ({mine / full:.0%})" if mine and full else ""
