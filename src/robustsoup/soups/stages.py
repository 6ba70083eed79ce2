"""The soups paper's experiment as pipeline stages: mix the soups on the lines, choose soups per shift,
test them, report.

``make_soup`` writes one soup of the grid (:mod:`robustsoup.soups.grid`) as a checkpoint, which rule
evaluate_model then evaluates like any model; ``report_soups`` draws the lines from those evaluations.

``select_soups`` scores the simplex grid of the base models on every
shift's adaptation images (and at several adaptation-set sizes) and runs
each selection method, the label-free ones with their safety signal;
``evaluate_soups_shifts`` tests the base models, output ensembles, the
single soup and every shift-specific soup on the held-out images of each
shift. Both run in one process each with the
in-place :class:`~robustsoup.soups.search.SoupScorer`.

The shifts are the base set's clean split, its corruption families
(:mod:`robustsoup.evaluate.shifts`) and every data set of ``data.shifts``, named by
the data set (``imagenet-r``; a -C set is one shift, tested per corruption
× severity). Each is scored as its data set says
(:func:`~robustsoup.data.scoring.split_scoring`). Selection decodes only
the first ``max(soups.search.k)`` adaptation images of a shift; the test
splits are streamed in chunks of the scorer's batch, every model scored on
a chunk before the next is decoded, so a file-list split is decoded once
and never held whole in memory.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from ..attacks import attack_plan
from ..checkpoint import load_checkpoint, load_model, load_state_dict_checked, save_checkpoint
from ..config import base_model_names, dataset_name
from ..data import ImageSplit, load_split
from ..data.scoring import NO_TARGET, split_scoring
from ..data.splits import Split
from ..device import resolve_arithmetic, seed_everything
from ..evaluate.adversarial import union_rows
from ..evaluate.registry import make_evaluator
from ..evaluate.rows import MetricLog
from ..evaluate.shifts import MIXED_SEVERITY, evaluation_sets, part_label
from ..io import write_text_atomic
from ..lineage import CONFIG_ADVICE, check_related, mixed
from ..models.batchnorm import recompute_batchnorm_statistics
from ..models.memory_format import computing_in
from ..progress import Progress, progress
from ..report import attack_summary
from ..report.tables import write_table
from ..train.run import model_identity, new_meta
from ..weights import affine_combination
from .captions import SOUPS_REPORT
from .choice import choose_without_labels
from .grid import grid_from_config, simplex_grid, soup_id, write_grid
from .search import (
    LABEL_FREE_METHODS,
    SELECTION_METHODS,
    SoupScorer,
    batchnorm_layers,
    best_index,
    ensemble_correct,
)

log = logging.getLogger(__name__)

# k: the adaptation-set size asked for (soups.search.k); images: the adaptation images used (fewer where a
# shift has fewer than k). label_free: 1 for rows chosen without labels; score: the label-free score of the pick;
# disagreement: the safety signal (choice.pick_disagreement); fallback: 1 when the pipeline replaces
# the pick by fallback_model (the base model most accurate on the clean adaptation images), whose
# choice cost fallback_passes labelled forward passes.
SELECTION_COLUMNS = [
    "evalset",
    "k",
    "images",
    "method",
    "adaptation_accuracy",
    "forward_passes",
    "weights",
    "label_free",
    "score",
    "disagreement",
    "fallback",
    "fallback_model",
    "fallback_passes",
]


def _load_states(config: Mapping, model_paths: Mapping[str, str]):
    names = base_model_names(config)
    identity = model_identity(config)
    loaded = [load_checkpoint(model_paths[n], expect=identity) for n in names]
    _check_related(config, [meta for _, meta in loaded], "the soups of " + ", ".join(names))
    return names, [state for state, _ in loaded], loaded[0][1]


def _check_related(config: Mapping, metas, what: str) -> None:
    check_related(metas, what, config["allow_unrelated"], CONFIG_ADVICE, warn=log.warning)


def make_soup(
    config: Mapping,
    soup: str,
    weights: Mapping[str, float],
    model_paths: Mapping[str, str],
    train_path,
    out_path,
    device: torch.device | str = "cpu",
) -> Path:
    """Write the soup Σ wᵢθᵢ over the base models as a checkpoint of its own (rule ``make_soup``: the
    soups on the configured lines, :func:`robustsoup.soups.grid.grid_from_config`).

    BatchNorm statistics are mixed or re-estimated on training images, as
    ``soups.batchnorm`` says.
    """
    names = [n for n in base_model_names(config) if n in weights]
    identity = model_identity(config)
    loaded = [load_checkpoint(model_paths[n], expect=identity) for n in names]
    metas = [m for _, m in loaded]
    _check_related(config, metas, f"soup {soup}")
    combined = affine_combination([s for s, _ in loaded], [weights[n] for n in names], names=names)
    spec = config["soups"]
    meta = new_meta(identity, soup, provenance={"soup": {n: weights[n] for n in names}, "batchnorm": spec["batchnorm"]})
    meta.lineage = mixed(metas)
    if spec["batchnorm"] == "recompute":
        seed_everything(config["seed"])
        model = meta.build()
        load_state_dict_checked(model, combined, source=soup)
        images = load_split(train_path).images[: spec["batchnorm_images"]]
        recompute_batchnorm_statistics(model, images, device=device)
        meta.provenance["batchnorm_images"] = len(images)
        combined = model.state_dict()
    save_checkpoint(out_path, combined, meta)
    return Path(out_path)


def _sets(config: Mapping, split_path, corrupted_dir) -> dict[str, Split]:
    """The base set's shifts: ``clean`` and its corruption families (when corrupted copies exist)."""
    data = config["data"]
    return evaluation_sets(
        load_split(split_path), corrupted_dir, data["corruptions"], data["severities"], seed=config["seed"]
    )


def _check_shift_names(shifts: Mapping[str, Mapping[str, str]], base: Mapping[str, Split]) -> None:
    clash = sorted(set(shifts) & (set(base) | {"all"}))
    if clash:
        raise ValueError(f"data.shifts names {clash}, which are already shift names of the base set ({sorted(base)})")


def interleaved_head(parts: Sequence[Split], n: int, name: str) -> ImageSplit:
    """The first ``n`` images of ``parts`` taken in turn (image 0 of every part, then image 1, …), decoded.

    A multi-part shift (a -C set: one part per corruption × severity) is one
    adaptation set: any prefix covers its parts evenly, as each part's own
    prefix covers its classes. Only these ``n`` images are decoded, so a
    file-list shift never lies whole in memory. Label sets (ReaL) are padded
    with :data:`~robustsoup.data.scoring.NO_TARGET` to the widest part.
    """
    if not parts:
        raise ValueError(f"shift {name!r} has no parts to adapt on")
    if any((p.targets is None) != (parts[0].targets is None) for p in parts):
        raise ValueError(f"shift {name!r}: some parts have label sets ('targets') and some not")
    order = [(p, i) for i in range(max(len(p) for p in parts)) for p in range(len(parts)) if i < len(parts[p])][:n]
    taken = [[i for q, i in order if q == p] for p in range(len(parts))]
    decoded = [parts[p].load(torch.as_tensor(idx, dtype=torch.int64)) if idx else None for p, idx in enumerate(taken)]
    slot = {pair: j for j, pair in enumerate(sorted(order, key=lambda pair: (pair[0], pair[1])))}
    pieces = torch.cat([d for d in decoded if d is not None])
    where = torch.as_tensor([slot[pair] for pair in order], dtype=torch.int64)
    images = pieces[where]
    labels = torch.stack([parts[p].labels[i] for p, i in order]) if order else torch.empty(0, dtype=torch.int64)
    targets = None
    if parts[0].targets is not None:
        width = max(p.targets.shape[1] for p in parts)
        targets = torch.full((len(order), width), NO_TARGET, dtype=parts[0].targets.dtype)
        for j, (p, i) in enumerate(order):
            row = parts[p].targets[i]
            targets[j, : len(row)] = row
    return ImageSplit(images, labels, parts[0].dataset, f"{name}:adapt", targets=targets)


def _adaptation_sets(config: Mapping, adapt_path, corrupted_dir, shifts: Mapping, n: int) -> dict[str, Split]:
    """Every shift's first ``n`` adaptation images, decoded: the base set's shifts, then each configured
    shift (``{shift: {part: adapt split}}``) with its parts interleaved (:func:`interleaved_head`)."""
    base = _sets(config, adapt_path, corrupted_dir)
    _check_shift_names(shifts, base)
    sets = {name: interleaved_head([split], n, name) for name, split in base.items()}
    for shift, parts in shifts.items():
        sets[shift] = interleaved_head([load_split(path) for path in parts.values()], n, shift)
    return sets


@dataclass(frozen=True)
class _TestSet:
    """One held-out split of a shift with the ``corruption`` and ``severity`` of its tidy rows; a path
    is read only when the split is evaluated (one part of a -C set in memory at a time)."""

    evalset: str
    corruption: str
    severity: int
    source: Split | str

    def split(self) -> Split:
        return load_split(self.source) if isinstance(self.source, (str, Path)) else self.source


def _test_sets(config: Mapping, test_path, corrupted_dir, shifts: Mapping) -> list[_TestSet]:
    base = _sets(config, test_path, corrupted_dir)
    _check_shift_names(shifts, base)
    units = [
        _TestSet(name, "none" if name == "clean" else name, 0 if name == "clean" else MIXED_SEVERITY, split)
        for name, split in base.items()
    ]
    for shift, parts in shifts.items():
        units += [_TestSet(shift, *part_label(part), path) for part, path in parts.items()]
    return units


def select_soups(
    config: Mapping,
    model_paths: Mapping[str, str],
    adapt_path,
    adapt_corrupted_dir,
    scores_path,
    selection_path,
    device="cpu",
    shifts: Mapping[str, Mapping[str, str]] | None = None,
) -> pd.DataFrame:
    """Score the grid on every shift's adaptation images and run every selection method.

    The shifts are the base set's (clean, corruption families) and the data
    sets of ``shifts`` (``{shift: {part: adapt split}}``, from ``data.shifts``),
    each scored as its data set says.

    Writes ``scores_path`` (one row per soup: weights and adaptation accuracy
    per shift, on the largest adaptation size) and ``selection_path`` (one
    row per shift × adaptation size × method, plus the single soup chosen
    for the mean over shifts). Label-free methods see the same first k
    adaptation images without their labels (which only fill the diagnostic
    ``adaptation_accuracy``); their rows carry the safety signal and whether
    the pipeline falls back to the base model most accurate on the clean
    adaptation images (see :data:`SELECTION_COLUMNS`). Returns the selection table.
    """
    spec = config["soups"]["search"]
    names, states, meta = _load_states(config, model_paths)
    model = meta.build()  # its narrowest convolution decides the memory format on a CPU (device.resolve_channels_last)
    arithmetic = resolve_arithmetic(spec["precision"], "auto", device, model)
    log.info("adaptation scores in %s", arithmetic)
    scorer = SoupScorer(model, states, names, device=device, arithmetic=arithmetic, memo=True)
    grid = [dict(zip(names, w)) for w in simplex_grid(len(names), spec["step"], spec["extend"])]
    sets = _adaptation_sets(config, adapt_path, adapt_corrupted_dir, shifts or {}, max(spec["k"]))
    log.info("%d soups × %d shifts %s; adaptation sizes %s", len(grid), len(sets), list(sets), spec["k"])
    labelled = [m for m in spec["methods"] if m not in LABEL_FREE_METHODS]
    label_free = _label_free_methods(spec["methods"], scorer)
    fallbacks = _fallback_models(scorer, sets["clean"], spec["k"]) if label_free else {}
    rows, largest_scores = [], {}
    with Progress(len(sets) * len(spec["k"]) * (len(labelled) + bool(label_free)), "select_soups", "steps") as counter:
        for evalset, split in sets.items():
            inputs, labels, targets, scoring = (
                scorer.prepare(split.images),
                split.labels,
                split.targets,
                split_scoring(split),
            )
            for k in spec["k"]:
                k_eff = min(k, len(labels))
                head = None if targets is None else targets[:k_eff]
                # Label-free first: its pass over the grid (BatchNorm hooks on) leaves each soup's logits in the
                # scorer's memo, where grid search and the others find them (the labelled rows still come first).
                choice = (
                    choose_without_labels(
                        scorer,
                        grid,
                        inputs[:k_eff],
                        label_free,
                        spec["fallback_threshold"],
                        labels[:k_eff],
                        scoring=scoring,
                        targets=head,
                    )
                    if label_free
                    else None
                )
                for method in labelled:
                    chosen = _run_method(method, scorer, grid, inputs[:k_eff], labels[:k_eff], spec, scoring, head)
                    rows.append(_selection_row(evalset, k, k_eff, chosen, label_free=0))
                    if method == "grid" and k == max(spec["k"]):
                        largest_scores[evalset] = chosen.details["scores"]
                    counter.advance()
                if choice is not None:
                    fallback_model, fallback_passes = fallbacks[k]
                    for method, chosen in choice.selections.items():
                        fires = choice.fallback(method)
                        rows.append(
                            _selection_row(
                                evalset,
                                k,
                                k_eff,
                                chosen,
                                label_free=1,
                                score=chosen.details["score"],
                                disagreement=choice.disagreement[method],
                                fallback=int(fires),
                                fallback_model=fallback_model,
                                fallback_passes=fallback_passes,
                            )
                        )
                        log.info(
                            "%s k=%d %s: disagreement %.3f with the other label-free picks%s",
                            evalset,
                            k_eff,
                            method,
                            choice.disagreement[method],
                            f" > {spec['fallback_threshold']:g}: falls back to {fallback_model}" if fires else "",
                        )
                    counter.advance()
    # One soup for all shifts together: the best mean adaptation accuracy over shifts.
    table = pd.DataFrame(grid)
    for evalset, scores in largest_scores.items():
        table[evalset] = scores
    if largest_scores:
        mean = table[list(largest_scores)].mean(axis=1)
        i = best_index(list(mean))
        rows.append(
            {
                "evalset": "all",
                "k": max(spec["k"]),
                "images": min(max(spec["k"]), min(len(s) for s in sets.values())),
                "method": "single",
                "adaptation_accuracy": float(mean[i]),
                "forward_passes": len(grid) * sum(min(max(spec["k"]), len(s)) for s in sets.values()),
                "weights": json.dumps(grid[i]),
            }
        )
    write_text_atomic(scores_path, table.to_csv(sep="\t", index=False))
    selection = pd.DataFrame(rows, columns=SELECTION_COLUMNS)
    write_text_atomic(selection_path, selection.to_csv(sep="\t", index=False))
    return selection


def _selection_row(evalset: str, k: int, images: int, chosen, **extra) -> dict:
    log.info(
        "%s k=%d (%d images) %s: %.4f with %s (%d passes)",
        evalset,
        k,
        images,
        chosen.method,
        chosen.adaptation_accuracy,
        chosen.weights,
        chosen.forward_passes,
    )
    return {
        "evalset": evalset,
        "k": k,
        "images": images,
        "method": chosen.method,
        "adaptation_accuracy": chosen.adaptation_accuracy,
        "forward_passes": chosen.forward_passes,
        "weights": json.dumps(chosen.weights),
        **extra,
    }


def _label_free_methods(methods, scorer: SoupScorer) -> list[str]:
    """The configured label-free methods this network supports (bn_distance needs BatchNorm)."""
    chosen = [m for m in methods if m in LABEL_FREE_METHODS]
    if not batchnorm_layers(scorer.net):
        skipped = [m for m in chosen if LABEL_FREE_METHODS[m].needs_batchnorm]
        if skipped:
            log.warning("%s skipped: the network has no BatchNorm layer", ", ".join(skipped))
        chosen = [m for m in chosen if m not in skipped]
    return chosen


def _fallback_models(scorer: SoupScorer, clean, sizes) -> dict[int, tuple[str, int]]:
    """Per adaptation size k: the base model most accurate on the first k clean adaptation images
    (labels exist there; ties to the first base model) and the forward passes that choice cost."""
    inputs, scoring = scorer.prepare(clean.images), split_scoring(clean)
    out = {}
    for k in sizes:
        k_eff = min(k, len(clean.labels))
        start = scorer.forward_passes
        accuracy = [
            scorer.accuracy({n: 1.0}, inputs[:k_eff], clean.labels[:k_eff], scoring, clean.targets)
            for n in scorer.names
        ]
        out[k] = (scorer.names[best_index(accuracy)], scorer.forward_passes - start)
    return out


def _run_method(method: str, scorer: SoupScorer, grid, inputs, labels, spec, scoring, targets):
    if method not in SELECTION_METHODS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {sorted(SELECTION_METHODS)}")
    scored = {"scoring": scoring, "targets": targets}
    if method == "grid":
        return SELECTION_METHODS[method](scorer, grid, inputs, labels, **scored)
    if method == "halving":
        return SELECTION_METHODS[method](
            scorer,
            grid,
            inputs,
            labels,
            first_images=spec["halving_first_images"],
            keep=spec["halving_keep"],
            **scored,
        )
    if method == "learned":
        return SELECTION_METHODS[method](
            scorer,
            inputs,
            labels,
            steps=spec["learned_steps"],
            lr=spec["learned_lr"],
            init=spec["learned_init"],
            **scored,
        )
    return SELECTION_METHODS[method](scorer, inputs, labels, **scored)


def evaluate_soups_shifts(
    config: Mapping,
    model_paths: Mapping[str, str],
    test_path,
    test_corrupted_dir,
    selection_path,
    metrics_path,
    models_path,
    device="cpu",
    shifts: Mapping[str, Mapping[str, str]] | None = None,
    points_path=None,
) -> pd.DataFrame:
    """Held-out accuracy on every shift of: base models, ensembles, the single soup, and each
    shift-specific soup on its own shift, each scored as its data set says (:func:`split_scoring`).

    The shifts are the base set's and the data sets of ``shifts`` (``{shift:
    {part: test split}}``); a -C set gives one row per corruption × severity
    (``corruption``, ``severity`` filled). Writes tidy metric rows, with ``points_path`` their
    per-point results (:class:`~robustsoup.evaluate.rows.MetricLog`: what the findings pair), and a model
    table (kind, FLOPs multiple, weights) for the report."""
    names, states, meta = _load_states(config, model_paths)
    model = meta.build()  # float32, as every evaluation; its memory format evaluate.channels_last's
    arithmetic = resolve_arithmetic("float32", config["evaluate"]["channels_last"], device, model)
    # memo: the methods' picks repeat (5 distinct soups among a shift's 16 on the default DAG); a soup already
    # scored on a batch is answered from that forward pass's logits, the same numbers without the pass
    scorer = SoupScorer(model, states, names, device=device, arithmetic=arithmetic, memo=True)
    units = _test_sets(config, test_path, test_corrupted_dir, shifts or {})
    evalsets = list(dict.fromkeys(unit.evalset for unit in units))
    selection = pd.read_csv(selection_path, sep="\t")
    models, soups = [], []

    def add_model(name, kind, weights, flops, targets, method="", k=0):
        models.append(
            {"model": name, "kind": kind, "method": method, "k": k, "flops": flops, "weights": json.dumps(weights)}
        )
        soups.append((name, weights, set(targets)))

    for name in names:
        add_model(name, "base", {name: 1.0}, 1, evalsets)
    for _, row in selection.iterrows():
        weights = json.loads(row["weights"])
        if row["method"] == "single":
            add_model("soup-single", "single", weights, 1, evalsets, "grid", int(row["k"]))
        elif row["evalset"] in evalsets:
            add_model(
                f"soup-{row['evalset']}-{row['method']}-k{int(row['k'])}",
                "specific",
                weights,
                1,
                [row["evalset"]],
                row["method"],
                int(row["k"]),
            )
    ensembles = {"ensemble-" + "+".join(members): members for members in config["soups"]["ensembles"]}
    full = {}
    for name, members in ensembles.items():
        models.append(
            {
                "model": name,
                "kind": "ensemble",
                "method": "",
                "k": 0,
                "flops": len(members),
                "weights": json.dumps({m: 1.0 / len(members) for m in members}),
            }
        )
    with contextlib.ExitStack() as formats:
        for n in dict.fromkeys(m for members in ensembles.values() for m in members):  # converted once, for the loop
            loaded = load_model(model_paths[n], expect=model_identity(config), device=device)[0]
            full[n] = formats.enter_context(computing_in(loaded, arithmetic.channels_last))
        measured = MetricLog()
        for unit in progress(units, "evaluate_soups_shifts", unit="test sets"):
            split = unit.split()
            wanted = [(name, weights) for name, weights, targets in soups if unit.evalset in targets]

            def scores(images, labels, scoring, targets, wanted=wanted) -> dict[str, torch.Tensor]:
                inputs = scorer.prepare(images)
                out = {name: scorer.correct(weights, inputs, labels, scoring, targets) for name, weights in wanted}
                for name, members in ensembles.items():
                    ensemble = [full[m] for m in members]
                    out[name] = ensemble_correct(
                        ensemble, images.to(device), labels.to(device), scoring=scoring, targets=targets
                    )
                return out

            names = [*(n for n, _ in wanted), *ensembles]
            shift = make_evaluator(
                "shift",
                data=split,
                evalset=unit.evalset,
                corruption=unit.corruption,
                severity=unit.severity,
                batch_size=scorer.batch_size,
            )
            shift.run(names, scores, device, measured)
            log.info(
                "%s %s/%s: %d images, %d models", unit.evalset, unit.corruption, unit.severity, len(split), len(names)
            )
    frame = measured.write(metrics_path, points_path)
    write_text_atomic(models_path, pd.DataFrame(models).to_csv(sep="\t", index=False))
    return frame


def evaluate_ternary(
    config: Mapping, model_paths: Mapping[str, str], test_path, metrics_path, device="cpu"
) -> pd.DataFrame:
    """Clean, per-norm and union accuracy of every soup on the triangle of three models.

    One model instance is overwritten in place per soup; the attack is the
    fast APGD-CE of the evaluation (``soups.ternary.n_iter`` iterations on
    the first ``soups.ternary.n_images`` test images). Soup ids follow
    :func:`robustsoup.soups.grid.soup_id`; corners keep their model names.
    """
    spec = config["soups"]["ternary"]
    corners = list(spec["models"])
    identity = model_identity(config)
    loaded = [load_checkpoint(model_paths[n], expect=identity) for n in corners]
    _check_related(config, [meta for _, meta in loaded], "the ternary soups of " + ", ".join(corners))
    scorer = SoupScorer(loaded[0][1].build(), [s for s, _ in loaded], corners, device=device)
    data = load_split(test_path)
    num_classes = loaded[0][1].num_classes
    plans = {n: attack_plan("fast", n, num_classes, spec["n_iter"], 1) for n in config["evaluate"]["threats"]}
    frames = []
    for weights in progress(simplex_grid(3, spec["step"]), "evaluate_ternary", unit="soups"):
        mix = dict(zip(corners, weights))
        nonzero = {m: w for m, w in mix.items() if w}
        name = next(iter(nonzero)) if len(nonzero) == 1 else soup_id(nonzero, base_model_names(config))
        scorer.load(mix)
        threats = make_evaluator(
            "adversarial",
            data=data,
            eps=config["threats"],
            plans=plans,
            n_attacked=min(spec["n_images"], len(data)),
            seed=config["seed"],
            channels_last=config["evaluate"]["channels_last"],
        )
        results = threats.run(scorer.model, name, device)
        parts = [rows for rows, _ in results.values()]
        all_points = {("none" if t == "clean" else t): points for t, (_, points) in results.items()}
        attacks = {norm: plan.name for norm, plan in plans.items()}
        parts.append(union_rows(name, data.split, all_points, attacks))
        frame = pd.concat([p for p in parts if not p.empty], ignore_index=True)
        for corner in corners:
            frame[corner] = mix[corner]
        frames.append(frame)
        log.info("ternary %s: %s", name, dict(zip(frame["threat"], frame["accuracy"].round(3))))
    table = pd.concat(frames, ignore_index=True)
    write_text_atomic(metrics_path, table.to_csv(sep="\t", index=False))
    return table


def _label_free_note(table: pd.DataFrame, spec: Mapping) -> str:
    """What the label-free rows are, and how often their fallback fired and what it changed."""
    free = table[table["kind"] == "label-free"]
    safe = table[table["kind"] == "label-free+fallback"]
    if free.empty:
        return ""
    counts = [tuple(int(x) for x in f.split("/")) for f in safe["fallbacks"]]
    fired, picks = sum(c[0] for c in counts), sum(c[1] for c in counts)
    change = float((safe["mean"].to_numpy() - free["mean"].to_numpy()).mean())
    return (
        ". Label-free rows choose from the same k adaptation images without their labels; "
        "'+ fallback' uses instead the base model most accurate on the clean adaptation images (labelled) "
        "wherever the label-free picks predict differently on more than "
        f"{spec['fallback_threshold']:.0%} of the images (median over the other label-free methods): it fired on "
        f"{fired} of {picks} picks and changed a row's mean accuracy by {change:+.1f} points on average. Δ grid: "
        "points against grid search at the same k (mean over shifts); Δ best base, worst Δ best base: mean "
        "and smallest gap to the best base model of each shift (an oracle: chosen on held-out labels)"
    )


def report_soups(
    config: Mapping,
    shifts_path,
    models_path,
    selection_path,
    ternary_path,
    ledger_path,
    table_stem,
    composition_path,
    ternary_figure_path,
    grid_path,
    line_figure_paths: Sequence,
) -> list[Path]:
    """Rule ``report_soups``: the soups paper's table (CSV + Markdown) and figures (soup composition per
    shift, ternary maps), the soup grid (``soups/grid.tsv``) and one soup-line figure per configured line
    (``line_figure_paths``, in ``soups.lines`` order) from the models' rows in ``metrics/all.tsv``
    (``ledger_path``, study ``lp``: the base models and the soups on the lines, union accuracy included)."""
    from .report import plot_composition, plot_soup_line, plot_ternary, shifts_table, soup_line_points

    metrics = pd.read_csv(shifts_path, sep="\t")
    models = pd.read_csv(models_path, sep="\t")
    selection = pd.read_csv(selection_path, sep="\t")
    evalsets = list(dict.fromkeys(metrics["evalset"]))
    table = shifts_table(metrics, models, selection, evalsets, dataset_name(config))
    sizes = "/".join(str(n) for n in sorted(set(metrics["n"])))
    note = (
        f"Held-out images per shift: {sizes}. Per-shift soups are chosen on the first k adaptation "
        "images of that shift (all of them where it has fewer) over the simplex grid of the base models "
        f"(step {config['soups']['search']['step']}); corruption families are mixtures of the "
        "configured corruptions and severities, one per image. FLOPs: multiple of one model's. "
        "Forward passes: soup × image evaluations the choice used, summed over shifts"
        + _label_free_note(table, config["soups"]["search"])
    )
    if any(column.endswith("mCE") for column in table.columns):
        note += (
            ". mCE, relative mCE: ImageNet-C's mean corruption error and its drop from clean error, each "
            "normalised by AlexNet's (Hendrycks & Dietterich 2019), in %: AlexNet = 100, lower is better"
        )
    written = write_table(
        table,
        table_stem,
        f"Soups per distribution shift on {config['dataset']}",
        note,
        SOUPS_REPORT.caption("soups_shifts"),
    )
    written += plot_composition(selection, base_model_names(config), composition_path)
    if ternary_path is not None:
        spec = config["soups"]["ternary"]
        written += plot_ternary(pd.read_csv(ternary_path, sep="\t"), spec["models"], ternary_figure_path)
    write_grid(grid_from_config(config), base_model_names(config), grid_path)
    grid = pd.read_csv(grid_path, sep="\t")
    ledger = pd.read_csv(ledger_path, sep="\t")
    lines = ledger[ledger["study"] == "lp"].drop(columns="study")
    for (a, b), path in zip(config["soups"]["lines"], line_figure_paths):
        points = soup_line_points(lines, grid, a, b)
        written += plot_soup_line(points, a, b, path, subtitle=attack_summary(lines))
    log.info("soups report:\n%s", "\n".join(map(str, written)))
    return written
