"""The papers' claims as verdicts a run computes: paired bootstrap intervals over test points, one table.

A claim is a statistic that is linear in measured accuracies: Σ wᵢ · accuracy(modelᵢ on setᵢ), in points
(e.g. fine-tune − parent, or the mean over corruptions of patched − standard). Its value is taken from
``metrics/all.tsv`` (the run's ledger: edit or merge it and the verdict follows); its 95 % interval comes
from a paired bootstrap over the test images in the per-point files (:mod:`robustsoup.points`): every
resample draws the same images for every model, so what the models share cancels. Images of one pool
(the test split and its corrupted copies: image i is the same photograph) are drawn together; other
pools (another data set's images) independently. The interval is the bootstrap's percentile interval
moved by the difference between the ledger's value and the per-point files' (zero unless the ledger was
edited). A claim holds when the whole interval lies above its threshold (0 unless the claim names one),
does not hold when it lies below, and is inconclusive otherwise.

Torch-free: ``robustsoup findings RESULTS_DIR`` recomputes the table in a second.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import write_text_atomic
from ..points import read_keyed_points, read_points
from .captions import ReportSection
from .html import write_table_page

CONFIDENCE = 0.95
RESAMPLES = 2000
BOOTSTRAP_SEED = 0
HOLDS, FAILS, INCONCLUSIVE, NOT_COMPUTED = "holds", "does not hold", "inconclusive", "not computed"
FINDING_COLUMNS = [
    "finding",
    "claim",
    "paper",
    "ours",
    "effect",
    "ci_low",
    "ci_high",
    "threshold",
    "n",
    "seeds",
    "verdict",
    "note",
]
FINDINGS_TITLE = "Findings: the papers' claims, checked on this run"


@dataclass(frozen=True)
class Term:
    """``weight`` × one measured accuracy (a fraction, from the ledger) with its per-point results (0/1 per
    image in index order; None where no per-point file has them). Terms of one ``pool`` (images shared, as the
    test split and its corrupted copies) are resampled together."""

    weight: float
    accuracy: float
    points: np.ndarray | None
    pool: str = "test"
    label: str = ""


class PointStore:
    """Per-point results of a run, found by the identity of their metric row (model, evalset, corruption,
    severity, threat): the keyed files stages write beside their rows, and a model evaluation's one file per
    threat. Files are read when first asked for."""

    def __init__(self) -> None:
        self._keyed: list[Path] = []
        self._single: dict[tuple, Path] = {}
        self._table: dict[tuple, np.ndarray] | None = None

    def add_keyed(self, path: str | Path) -> None:
        self._keyed.append(Path(path))
        self._table = None

    def add_single(self, path: str | Path, model: str, evalset: str, threat: str, corruption="none", severity=0):
        self._single[(model, evalset, corruption, int(severity), threat)] = Path(path)

    def _keyed_table(self) -> dict[tuple, np.ndarray]:
        if self._table is None:
            self._table = {}
            for path in self._keyed:
                if not path.is_file():
                    continue
                frame = read_keyed_points(path)
                for key, group in frame.groupby(["model", "evalset", "corruption", "severity", "threat"], sort=False):
                    model, evalset, corruption, severity, threat = key
                    ordered = group.sort_values("index")
                    self._table[(model, evalset, corruption, int(severity), threat)] = ordered["correct"].to_numpy()
        return self._table

    def get(self, model: str, evalset: str, corruption="none", severity=0, threat="none") -> np.ndarray | None:
        key = (model, evalset, corruption, int(severity), threat)
        if key in self._single:
            path = self._single[key]
            return read_points(path).sort_values("index")["correct"].to_numpy() if path.is_file() else None
        return self._keyed_table().get(key)


class Ledger:
    """The run's tidy rows (``metrics/all.tsv``): the accuracy of one measurement, or None if absent."""

    def __init__(self, metrics: pd.DataFrame) -> None:
        self.frame = metrics

    def rows(self, study: str | None = None, **match) -> pd.DataFrame:
        frame = self.frame if study is None else self.frame[self.frame["study"] == study]
        for column, value in match.items():
            frame = frame[frame[column] == value]
        return frame

    def accuracy(self, model: str, evalset: str, corruption="none", severity=0, threat="none", study=None):
        found = self.rows(study, model=model, evalset=evalset, corruption=corruption, severity=severity, threat=threat)
        if found["accuracy"].nunique() > 1:
            raise ValueError(
                f"metrics/all.tsv holds {len(found)} different accuracies of {model} on {evalset} "
                f"({corruption}, severity {severity}, threat {threat}): keep one row per measurement (a merged "
                "run's rows replace the old ones), or pass each seed's run folder separately"
            )
        return float(found["accuracy"].iloc[0]) if len(found) else None


MODEL_EVALSET = "test"  # the split evaluate_model measures


class ModelTerms:
    """Accuracy (ledger) and per-point results of the models' evaluations (study ``lp``, evalset ``test``:
    rule evaluate_model's rows), as :class:`Term` s; ``union`` is counted per point."""

    def __init__(self, config: Mapping, ledger: Ledger, points: PointStore) -> None:
        self.ledger, self.points = ledger, points
        self.norms = list(config["evaluate"]["threats"])

    def term(self, model: str, threat: str, weight: float) -> Term | None:
        accuracy = self.ledger.accuracy(model, MODEL_EVALSET, threat=threat, study="lp")
        if accuracy is None:
            return None
        return Term(weight, accuracy, self._points(model, threat), label=model)

    def _points(self, model: str, threat: str):
        if threat != "union":
            return self.points.get(model, MODEL_EVALSET, threat=threat)
        parts = [self.points.get(model, MODEL_EVALSET, threat=t) for t in ["none", *self.norms]]
        if any(p is None for p in parts):
            return None
        n = min(len(p) for p in parts[1:])
        return np.logical_and.reduce([p[:n] != 0 for p in parts]).astype(int)


def percent(term: Term) -> str:
    """A term's accuracy in percent, one decimal."""
    return f"{100 * term.accuracy:.1f}"


def bootstrap(terms: Sequence[Term], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Σ wᵢ · mean(pointsᵢ) in points over ``resamples`` paired resamples of the images of each pool."""
    pools: dict[tuple[str, int], np.ndarray] = {}
    for term in terms:
        points = np.asarray(term.points, dtype=float)
        key = (term.pool, len(points))
        pools[key] = pools.get(key, np.zeros(len(points))) + term.weight * points
    rng = np.random.default_rng(seed)
    stats = np.zeros(resamples)
    for (_, n), combined in pools.items():
        chunk = max(1, 2_000_000 // max(n, 1))  # at most a few million indices drawn at once
        for start in range(0, resamples, chunk):
            stop = min(resamples, start + chunk)
            stats[start:stop] += combined[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)
    return stats * 100


def verdict(low: float, high: float, threshold: float = 0.0) -> str:
    if np.isnan(low) or np.isnan(high):
        return INCONCLUSIVE
    return HOLDS if low > threshold else FAILS if high < threshold else INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    """One checkable claim as one run measured it: Σ of its ``terms`` against ``threshold`` (points); or, with
    ``exact`` = (differing, n), a claim of identity that holds when no image differs; or, with ``why``, a
    claim this run cannot check. :func:`findings_rows` turns the claims of one or several seeds into rows."""

    finding: str
    claim: str
    terms: tuple[Term, ...] = ()
    threshold: float = 0.0
    ours: str = ""
    paper: str = ""
    note: str = ""
    exact: tuple[int | None, int] | None = None
    why: str = ""

    @property
    def effect(self) -> float:
        return 100 * sum(t.weight * t.accuracy for t in self.terms)

    def missing(self) -> list[str]:
        return list(dict.fromkeys(t.label for t in self.terms if t.points is None or len(t.points) == 0))

    def resampled(self) -> tuple[np.ndarray, float]:
        """:func:`bootstrap` of the terms moved by the ledger's difference from the per-point files, and that
        difference. Every run draws the same images (one generator seed), so seeds are paired too."""
        from_points = 100 * sum(t.weight * float(np.mean(t.points)) for t in self.terms)
        return bootstrap(self.terms) + (self.effect - from_points), self.effect - from_points


def measured_claim(finding: str, text: str, terms, *, threshold=0.0, ours="", paper="", note="") -> Claim:
    """A claim on measured accuracies (see :class:`Claim`)."""
    return Claim(finding, text, tuple(terms), threshold, ours, paper, note)


def exact_claim(finding: str, text: str, differing: int | None, n: int, *, ours: str = "", note: str = "") -> Claim:
    """A claim of identity, not of size (unpatching restores the model): it holds when no image differs."""
    return Claim(finding, text, ours=ours, note=note, exact=(differing, n))


def not_computed(finding: str, text: str, why: str) -> Claim:
    """A claim this run cannot check (a study disabled, a model absent): its row says why."""
    return Claim(finding, text, why=why)


def findings_rows(per_seed: Mapping[str, Sequence[Claim]]) -> list[dict]:
    """The table's rows from each seed's claims (``{seed: claims}``, one run per seed), one row per claim.

    With one seed, the interval is the percentile interval of that run's paired bootstrap. With several,
    the effect is the mean over seeds and every resample draws the seeds too (with replacement) and
    averages their resampled effects: the interval carries the spread across seeds as well as across
    images. A seed that could not check a claim is left out of its row, and the note says so."""
    order: dict[tuple[str, str], None] = {}
    for claims in per_seed.values():
        order.update(dict.fromkeys((c.finding, c.claim) for c in claims))
    found = {seed: {(c.finding, c.claim): c for c in claims} for seed, claims in per_seed.items()}
    rows = []
    for key in order:
        present = {seed: claims[key] for seed, claims in found.items() if key in claims}
        rows.append(_row(present, [s for s in per_seed if s not in present]))
    return rows


def _row(claims: Mapping[str, Claim], absent: Sequence[str]) -> dict:
    checked = {s: c for s, c in claims.items() if not c.why}
    first = next(iter(claims.values()))
    row = dict.fromkeys(FINDING_COLUMNS, "")
    row.update(finding=first.finding, claim=first.claim, paper=first.paper, threshold=first.threshold)
    row.update(effect=float("nan"), ci_low=float("nan"), ci_high=float("nan"))
    skipped = [s for s, c in claims.items() if c.why] + list(absent)
    notes = [f"not checked on seed {', '.join(skipped)}"] if checked and skipped else []
    if not checked:
        row.update(seeds=", ".join(claims), verdict=NOT_COMPUTED, note=first.why)
        return row
    seeds = list(checked)
    several = len(seeds) > 1
    row["seeds"] = ", ".join(seeds)
    row["ours"] = " · ".join(f"seed {s}: {c.ours}" if several else c.ours for s, c in checked.items())
    notes += list(dict.fromkeys(c.note for c in checked.values() if c.note))
    if first.exact is not None:
        counts = [c.exact for c in checked.values()]
        differing = None if any(d is None for d, _ in counts) else sum(d for d, _ in counts)
        row.update(effect=float("nan") if differing is None else float(differing), n=str(sum(n for _, n in counts)))
        row["verdict"] = INCONCLUSIVE if differing is None else HOLDS if differing == 0 else FAILS
        row["note"] = _join(*notes)
        return row
    effects = [c.effect for c in checked.values()]
    row["effect"] = round(float(np.mean(effects)), 2)
    if several:
        notes.append(f"effect per seed {', '.join(f'{e:+.1f}' for e in effects)} (sd {np.std(effects, ddof=1):.1f})")
    missing = [m for c in checked.values() for m in c.missing()]
    if missing:
        notes.append(f"no per-point results for {', '.join(dict.fromkeys(missing))}: no interval")
    else:
        draws, moved = zip(*(c.resampled() for c in checked.values()))
        stats = _across_seeds(np.stack(draws)) if several else draws[0]
        tail = (1 - CONFIDENCE) / 2 * 100
        low, high = (round(float(v), 2) for v in np.percentile(stats, [tail, 100 - tail]))
        row.update(ci_low=low, ci_high=high)
        if any(abs(m) > 1e-6 for m in moved):
            notes.append(f"metrics/all.tsv differs from the per-point files by {', '.join(f'{m:+.2f}' for m in moved)}")
    sizes = sorted({len(t.points) for c in checked.values() for t in c.terms if t.points is not None})
    sets = sum(1 for t in first.terms if t.weight > 0)  # the sets of images the claimed side is measured on
    row["n"] = "/".join(map(str, sizes)) + (f" × {sets} sets" if sets > 1 else "")
    row["verdict"] = verdict(row["ci_low"], row["ci_high"], first.threshold)
    row["note"] = _join(*notes)
    return row


def _across_seeds(draws: np.ndarray, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """Resample r: the mean of resample r of S seeds drawn with replacement (``draws``: seeds × resamples)."""
    count, resamples = draws.shape
    picked = np.random.default_rng(seed + 1).integers(0, count, size=(resamples, count))
    return draws[picked, np.arange(resamples)[:, None]].mean(axis=1)


def _join(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def findings_frame(per_seed: Mapping[str, Sequence[Claim]]) -> pd.DataFrame:
    """The findings table of each seed's claims (:func:`findings_rows`)."""
    return pd.DataFrame(findings_rows(per_seed), columns=FINDING_COLUMNS)


# The findings' folder of Snakemake's HTML report (it spans the studies, so it is the report package's own,
# like the run cost's); the workflow maps "findings" to it (``REPORT`` in workflow/rules/common.smk).
FINDINGS_REPORT = ReportSection(
    category="6. Findings",
    labels={
        "findings": "The papers' claims, checked (F1–F5)",
    },
    captions={
        "findings": (
            "One row per checkable part of the papers' findings (F1 robust fine-tuning, F2 soups along a line, "
            "F3 soups per shift, F4 robust weight signatures, F5 robust distillation). ours: the numbers compared "
            "(%), from metrics/all.tsv; effect: their difference in points (for 'recovers 90 %' claims, the "
            "fine-tune minus 90 % of the reference); CI: the 95 % percentile interval of a paired bootstrap "
            f"({RESAMPLES:,} resamples, seed {BOOTSTRAP_SEED}) over the test images of the per-point files, each "
            "resample the same images for every model (the test split and its corrupted copies together). "
            "Verdict: holds when the whole interval lies above the threshold (points; 0 unless the claim names "
            "one, e.g. −1 for 'within 1 point'), does not hold when it lies below, inconclusive when it contains "
            "the threshold; 'not computed' says why a part could not be checked in this run. Thresholds: "
            "F1 fine-tune > parent in its norm (0) and ≥ 90 % of the from-scratch reference (0 on fine-tune − "
            "0.9 × reference); F2 best interior soup > each end in union accuracy (0), best extrapolated soup > "
            "best soup within the line (0); F3 per-shift soups > each comparator (0); F4 RWS > standard and > "
            "augmentation in mean corruption accuracy (0), standard TA > augmentation's (0), unpatching changes "
            "no prediction (exact); F5 clean accuracy within 1 point of the student (−1), corruption accuracy > "
            "the student's (0) and within 1 point of full fine-tuning's (−1). Best soups are picked on the same "
            "test points, so their intervals are optimistic. paper: the paper's difference where our setting is "
            "its (soups poster table on ImageNet, RWS Table 4 on CIFAR-10/100), else empty. With several seeds "
            "(one run each), the effect is their mean and every resample also draws the seeds with replacement, "
            "so the interval carries the spread across seeds."
        ),
    },
)


def findings_markdown(frame: pd.DataFrame) -> str:
    columns = ["finding", "claim", "paper", "ours", "effect", "95 % CI", "n", "seeds", "verdict", "note"]
    lines = [f"# {FINDINGS_TITLE}", "", FINDINGS_REPORT.caption("findings"), "", "| " + " | ".join(columns) + " |"]
    lines.append("|" + "---|" * len(columns))
    for row in frame.itertuples(index=False):
        cells = [row.finding, row.claim, row.paper, row.ours, _number(row.effect), _interval(row), row.n]
        cells += [row.seeds, row.verdict, row.note]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _number(value) -> str:
    return "" if value is None or value == "" or pd.isna(value) else f"{float(value):+.1f}"


def _interval(row) -> str:
    if pd.isna(row.ci_low) or pd.isna(row.ci_high):
        return ""
    return f"[{row.ci_low:+.1f}, {row.ci_high:+.1f}]"


def display_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as the Markdown and HTML pages show it: numbers as text, the interval in one column."""
    shown = frame.copy()
    shown["effect"] = [_number(v) for v in frame["effect"]]
    shown.insert(shown.columns.get_loc("ci_low"), "95 % CI", [_interval(r) for r in frame.itertuples(index=False)])
    shown = shown.drop(columns=["ci_low", "ci_high", "threshold"])
    return shown.set_index("finding")


def write_findings(frame: pd.DataFrame, csv_path, md_path, html_path) -> list[Path]:
    """The findings table as CSV (every column, numbers), Markdown and the HTML page of the report."""
    write_text_atomic(csv_path, frame.to_csv(index=False))
    write_text_atomic(md_path, findings_markdown(frame))
    page = write_table_page(
        display_table(frame),
        html_path,
        FINDINGS_TITLE,
        caption=FINDINGS_REPORT.caption("findings"),
        index_name="finding",
        cell=_cell,
    )
    return [Path(csv_path), Path(md_path), page]


def _cell(column: str, value) -> str:
    return "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
