"""Check that a data set is where the config says, in a layout robustsoup reads.

``robustsoup data check --dataset NAME --root PATH`` prints what it found
(images per part, classes, corruptions × severities) or an error that names
the missing or malformed file or folder and shows the expected layout. The
workflow runs the quick form of the same check while it parses the
Snakefile, so a misplaced folder fails in seconds, before any job is queued.

``quick`` checks the structure only (every split folder, the class folder
names, an image in a sample of class folders, every array's header) without
listing every file, which on ImageNet's 1.28 M training images takes a
while; the full check lists and counts everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError
from .registry import dataset_name, get_dataset_spec, open_dataset
from .sources import DataLayoutError

# What `data check` says about a set's scoring (robustsoup.data.scoring), where it is not plain argmax.
SCORING_NOTES = {
    "subset": "labels index the {spec.num_classes} classes of {spec.class_subset}; ImageNet logits are restricted to them",
    "label-sets": "scored against each image's ReaL label set (right if the prediction is in it)",
    "categories": (
        "labels are {spec.num_classes} categories; an ImageNet model's score for one is the mean probability\n"
        "of its ImageNet classes (model-vs-human's mapping); right if the best is the shape's category"
    ),
}


@dataclass
class PartReport:
    """One part: how many images and classes (None in a quick check) and what the probe saw."""

    name: str
    images: int | None
    classes: int | None
    note: str = ""


@dataclass
class CheckReport:
    dataset: str
    root: Path | None
    found: str
    parts: list[PartReport] = field(default_factory=list)
    corruptions: list[str] = field(default_factory=list)
    severities: list[int] = field(default_factory=list)

    def text(self) -> str:
        """A human-readable summary."""
        spec = get_dataset_spec(self.dataset)
        lines = [
            f"{self.dataset}: {spec.description}",
            f"  root:  {self.root if self.root else '(embedded)'}",
            f"  found: {self.found}",
        ]
        if self.corruptions:
            lines.append(
                f"  corruptions × severities: {len(self.corruptions)} × {len(self.severities)} "
                f"(severities {', '.join(map(str, self.severities))})"
            )
            lines.append("    " + ", ".join(self.corruptions))
        total = 0
        for part in self.parts:
            if part.images is None:
                lines.append(f"  {part.name:<28} {part.note}")
            else:
                total += part.images
                lines.append(f"  {part.name:<28} {part.images:>9,} images, {part.classes} classes")
        if any(p.images is not None for p in self.parts) and len(self.parts) > 1:
            lines.append(f"  {'total':<28} {total:>9,} images")
        lines += [f"  {line}" for line in SCORING_NOTES.get(spec.scoring, "").format(spec=spec).splitlines()]
        return "\n".join(lines)


def check_dataset(
    name: str,
    root: str | Path | None,
    *,
    quick: bool = False,
    corruptions: Sequence[str] | None = None,
    severities: Sequence[int] | None = None,
) -> CheckReport:
    """Check data set ``name`` under ``root``; raise :class:`DataLayoutError` with the expected layout if wrong.

    For corruption sets, ``corruptions`` / ``severities`` name what must be
    present (default: whatever is there, at least one corruption) and the
    check is restricted to them.
    """
    spec = get_dataset_spec(name)
    catalog = open_dataset(name, root)
    report = CheckReport(name, catalog.root, catalog.description)
    part_names = list(catalog)
    corrupted = all("/" in p for p in part_names) and bool(part_names)
    if corrupted:
        found = {}
        for part in part_names:
            corruption, _, severity = part.partition("/")
            found.setdefault(corruption, set()).add(int(severity))
        wanted = list(corruptions) if corruptions else sorted(found)
        missing = [c for c in wanted if c not in found]
        if missing:
            raise DataLayoutError(
                f"{name} at {catalog.root}: corruption(s) {', '.join(missing)} not found "
                f"(found: {', '.join(sorted(found)) or 'none'}); expected e.g. "
                f"{_corruption_example(spec.layout, missing[0], catalog.root)}.\nExpected layout:\n{spec.layout}"
            )
        wanted_sev = sorted(severities) if severities else [1, 2, 3, 4, 5]
        report.corruptions, report.severities = wanted, wanted_sev
        part_names = [f"{c}/{s}" for c in wanted for s in wanted_sev]
    elif spec.split_scheme == "official":
        for needed in (spec.train_part, spec.test_part):
            if needed not in catalog:
                raise DataLayoutError(
                    f"{name} at {catalog.root}: split {needed!r} missing.\nExpected layout:\n{spec.layout}"
                )
    for part in part_names:
        if quick:
            report.parts.append(PartReport(part, None, None, catalog.probe(part)))
        else:
            source = catalog[part]
            report.parts.append(PartReport(part, len(source), int(source.labels.unique().numel())))
    return report


def _corruption_example(layout: str, corruption: str, root) -> str:
    if ".npy" in layout:
        return f"{root}/{corruption}.npy"
    return f"{root}/{corruption}/1/<wnid>/…"


def check_config_data(config) -> list[CheckReport]:
    """Quick checks of the run's data set and every configured shift (the workflow's parse-time check)."""
    data = config.get("data", {})
    reports, problems = [], []
    name = dataset_name(config)
    spec = get_dataset_spec(name)
    checks = [(name, data.get("root"), "data.root")] if spec.needs_root else []
    for shift, root in (data.get("shifts") or {}).items():
        shift_spec = get_dataset_spec(shift)
        if shift_spec.base != name:
            raise ValueError(
                f"config key 'data.shifts.{shift}': {shift} is a shift of {shift_spec.base or 'no data set'}, "
                f"but this run's data set is {name}"
            )
        checks.append((shift, root, f"data.shifts.{shift}"))
    for dataset, root, key in checks:  # every root is checked, and every problem reported at once
        is_c = "*" in get_dataset_spec(dataset).nominal_sizes
        try:
            reports.append(
                check_dataset(
                    dataset,
                    root,
                    quick=True,
                    corruptions=data.get("corruptions") if is_c else None,
                    severities=data.get("severities") if is_c else None,
                )
            )
        except DataLayoutError as error:
            problems.append(f"config key '{key}': {error}")
    if problems:
        head = f"{len(problems)} of the {len(checks)} data roots are not usable" if len(problems) > 1 else ""
        raise DataLayoutError("\n\n".join(([head] if head else []) + problems))
    return reports


def train_subset_problem(config) -> str | None:
    """Why ``data.train_per_class`` cannot be met by the published training set (None if it can).

    Reads no data: k images of each of C classes need k·C training images, and
    the published training split (digits: what n_adapt and n_test leave) has
    a known size. Classes smaller than k in a large enough set are found when
    prepare_data splits the data (:func:`robustsoup.data.split_indices.train_subset`).
    """
    data = config.get("data", {})
    per_class = data.get("train_per_class")
    spec = get_dataset_spec(dataset_name(config))
    if per_class is None or spec.is_shift:
        return None
    if spec.split_scheme == "stratified":
        available = spec.nominal_size("all") - data.get("n_adapt", 0) - data.get("n_test", 0)
        where = f"the {available:,} left of {spec.nominal_size('all'):,} after data.n_adapt and data.n_test"
    else:
        available = spec.nominal_size(spec.train_part)
        where = f"{available:,} in its published training split"
    if available <= 0 or per_class * spec.num_classes <= available:
        return None
    return (
        f"config key 'data.train_per_class': {per_class} training images of each of {spec.name}'s "
        f"{spec.num_classes} classes need {per_class * spec.num_classes:,} images, but the data set has {where} "
        f"(about {available // spec.num_classes} per class). Lower data.train_per_class, or set it "
        "to null to train on every training image."
    )


def check_run_data(config) -> None:
    """The workflow's parse-time check (:func:`check_config_data`): a misplaced folder fails in seconds,
    before any job is queued, with one ConfigError that says what to run to see the details. A
    ``data.train_per_class`` no published training set can meet (:func:`train_subset_problem`) fails too."""
    problem = train_subset_problem(config)
    if problem:
        raise ConfigError(problem)
    try:
        check_config_data(config)
    except (DataLayoutError, ValueError, KeyError) as error:
        raise ConfigError(
            f"robustsoup: the data is not where the config says (data.root / data.shifts):\n{error}\n"
            "`robustsoup data check --dataset NAME --root PATH` runs the same check."
        ) from None
