"""The soups paper's experiment as pipeline stages: choose soups per shift, test them.

``select_soups`` scores the simplex grid of the base models on every
shift's adaptation images (and at several adaptation-set sizes) and runs
each selection method, the label-free ones with their safety signal;
``evaluate_soups_shifts`` tests the base models, output ensembles, the
single soup and every shift-specific soup on the held-out images of each
shift. Both run in one process each with the
in-place :class:`~robustsoup.soups.search.SoupScorer`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import torch

from ..checkpoint import load_checkpoint, load_model
from ..config import base_model_names
from ..data import load_split
from ..data.scoring import split_scoring
from ..device import resolve_arithmetic
from ..evaluate import METRIC_COLUMNS, metric_row, write_metrics
from ..io import write_text_atomic
from ..shifts import MIXED_SEVERITY, evaluation_sets
from ..train.run import model_identity
from .search import (
    LABEL_FREE_METHODS,
    SELECTION_METHODS,
    SoupScorer,
    batchnorm_layers,
    best_index,
    choose_without_labels,
    ensemble_correct,
    simplex_grid,
)

log = logging.getLogger(__name__)

# label_free: 1 for rows chosen without labels; score: the label-free score of the pick;
# disagreement: the safety signal (search.pick_disagreement); fallback: 1 when the pipeline replaces
# the pick by fallback_model (the base model most accurate on the clean adaptation images), whose
# choice cost fallback_passes labelled forward passes.
SELECTION_COLUMNS = [
    "evalset",
    "k",
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
    return names, [state for state, _ in loaded], loaded[0][1]


def _sets(config: Mapping, split_path, corrupted_dir) -> dict:
    data = config["data"]
    return evaluation_sets(
        load_split(split_path), corrupted_dir, data["corruptions"], data["severities"], seed=config["seed"]
    )


def select_soups(
    config: Mapping,
    model_paths: Mapping[str, str],
    adapt_path,
    adapt_corrupted_dir,
    scores_path,
    selection_path,
    device="cpu",
) -> pd.DataFrame:
    """Score the grid on every shift's adaptation images and run every selection method.

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
    arithmetic = resolve_arithmetic(spec["precision"], "auto", device)
    log.info("adaptation scores in %s", arithmetic)
    scorer = SoupScorer(meta.build(), states, names, device=device, arithmetic=arithmetic)
    grid = [dict(zip(names, w)) for w in simplex_grid(len(names), spec["step"], spec["extend"])]
    sets = _sets(config, adapt_path, adapt_corrupted_dir)
    log.info("%d soups × %d shifts %s; adaptation sizes %s", len(grid), len(sets), list(sets), spec["k"])
    labelled = [m for m in spec["methods"] if m not in LABEL_FREE_METHODS]
    label_free = _label_free_methods(spec["methods"], scorer)
    fallbacks = _fallback_models(scorer, sets["clean"], spec["k"]) if label_free else {}
    rows, largest_scores = [], {}
    for evalset, split in sets.items():
        inputs, labels = scorer.prepare(split.images), split.labels
        for k in spec["k"]:
            k_eff = min(k, len(labels))
            for method in labelled:
                chosen = _run_method(method, scorer, grid, inputs[:k_eff], labels[:k_eff], spec)
                rows.append(_selection_row(evalset, k_eff, chosen, label_free=0))
                if method == "grid" and k == max(spec["k"]):
                    largest_scores[evalset] = chosen.details["scores"]
            if label_free:
                choice = choose_without_labels(
                    scorer, grid, inputs[:k_eff], label_free, spec["fallback_threshold"], labels[:k_eff]
                )
                fallback_model, fallback_passes = fallbacks[k]
                for method, chosen in choice.selections.items():
                    fires = choice.fallback(method)
                    rows.append(
                        _selection_row(
                            evalset,
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
                "k": min(max(spec["k"]), min(len(s) for s in sets.values())),
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


def _selection_row(evalset: str, k: int, chosen, **extra) -> dict:
    log.info(
        "%s k=%d %s: %.4f with %s (%d passes)",
        evalset,
        k,
        chosen.method,
        chosen.adaptation_accuracy,
        chosen.weights,
        chosen.forward_passes,
    )
    return {
        "evalset": evalset,
        "k": k,
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
    inputs = scorer.prepare(clean.images)
    out = {}
    for k in sizes:
        k_eff = min(k, len(clean.labels))
        start = scorer.forward_passes
        accuracy = [scorer.accuracy({n: 1.0}, inputs[:k_eff], clean.labels[:k_eff]) for n in scorer.names]
        out[k] = (scorer.names[best_index(accuracy)], scorer.forward_passes - start)
    return out


def _run_method(method: str, scorer: SoupScorer, grid, inputs, labels, spec):
    if method not in SELECTION_METHODS:
        raise ValueError(f"unknown selection method {method!r}; expected one of {sorted(SELECTION_METHODS)}")
    if method == "grid":
        return SELECTION_METHODS[method](scorer, grid, inputs, labels)
    if method == "halving":
        return SELECTION_METHODS[method](
            scorer, grid, inputs, labels, first_images=spec["halving_first_images"], keep=spec["halving_keep"]
        )
    if method == "learned":
        return SELECTION_METHODS[method](
            scorer, inputs, labels, steps=spec["learned_steps"], lr=spec["learned_lr"], init=spec["learned_init"]
        )
    return SELECTION_METHODS[method](scorer, inputs, labels)


def _rows(model: str, evalset: str, correct: torch.Tensor) -> dict:
    family = evalset != "clean"
    return metric_row(
        model, evalset, correct, corruption=evalset if family else "none", severity=MIXED_SEVERITY if family else 0
    )


def evaluate_soups_shifts(
    config: Mapping,
    model_paths: Mapping[str, str],
    test_path,
    test_corrupted_dir,
    selection_path,
    metrics_path,
    models_path,
    device="cpu",
) -> pd.DataFrame:
    """Held-out accuracy on every shift of: base models, ensembles, the single soup, and each
    shift-specific soup on its own shift, each scored as its data set says (:func:`split_scoring`). Writes tidy metric rows and a model table (kind, FLOPs
    multiple, weights) for the report."""
    names, states, meta = _load_states(config, model_paths)
    scorer = SoupScorer(meta.build(), states, names, device=device)
    sets = _sets(config, test_path, test_corrupted_dir)
    selection = pd.read_csv(selection_path, sep="\t")
    rows, models = [], []

    def add_model(name, kind, weights, flops, targets, method="", k=0):
        models.append(
            {"model": name, "kind": kind, "method": method, "k": k, "flops": flops, "weights": json.dumps(weights)}
        )
        for evalset in targets:
            split = sets[evalset]
            inputs = scorer.prepare(split.images)
            correct = scorer.correct(weights, inputs, split.labels, split_scoring(split), split.targets)
            rows.append(_rows(name, evalset, correct))

    for name in names:
        add_model(name, "base", {name: 1.0}, 1, sets)
    for _, row in selection.iterrows():
        weights = json.loads(row["weights"])
        if row["method"] == "single":
            add_model("soup-single", "single", weights, 1, sets, "grid", int(row["k"]))
        elif row["evalset"] in sets:
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
    if ensembles:
        full = {n: load_model(model_paths[n], expect=model_identity(config), device=device)[0] for n in names}
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
            for evalset, split in sets.items():
                correct = ensemble_correct(
                    [full[m] for m in members],
                    split.images.to(device),
                    split.labels.to(device),
                    scoring=split_scoring(split),
                    targets=split.targets,
                )
                rows.append(_rows(name, evalset, correct))
    frame = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    write_metrics(frame, metrics_path)
    write_text_atomic(models_path, pd.DataFrame(models).to_csv(sep="\t", index=False))
    return frame


def evaluate_ternary(
    config: Mapping, model_paths: Mapping[str, str], test_path, metrics_path, device="cpu"
) -> pd.DataFrame:
    """Clean, per-norm and union accuracy of every soup on the triangle of three models.

    One model instance is overwritten in place per soup; the attack is the
    fast APGD-CE of the evaluation (``soups.ternary.n_iter`` iterations on
    the first ``soups.ternary.n_images`` test images). Soup ids follow
    :func:`robustsoup.soups.soup_id`; corners keep their model names.
    """
    from ..attacks import attack_plan
    from ..evaluate import evaluate_threats, union_rows
    from ..naming import soup_id

    spec = config["soups"]["ternary"]
    corners = list(spec["models"])
    identity = model_identity(config)
    loaded = [load_checkpoint(model_paths[n], expect=identity) for n in corners]
    scorer = SoupScorer(loaded[0][1].build(), [s for s, _ in loaded], corners, device=device)
    data = load_split(test_path)
    num_classes = loaded[0][1].num_classes
    plans = {n: attack_plan("fast", n, num_classes, spec["n_iter"], 1) for n in config["evaluate"]["threats"]}
    frames = []
    for weights in simplex_grid(3, spec["step"]):
        mix = dict(zip(corners, weights))
        nonzero = {m: w for m, w in mix.items() if w}
        name = next(iter(nonzero)) if len(nonzero) == 1 else soup_id(nonzero, base_model_names(config))
        scorer.load(mix)
        results = evaluate_threats(
            scorer.model,
            name,
            data,
            config["threats"],
            plans,
            min(spec["n_images"], len(data)),
            seed=config["seed"],
            device=device,
        )
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
    table_stem,
    composition_path,
    ternary_figure_path,
) -> list[Path]:
    """The soups paper's table (CSV + Markdown) and figures: soup composition per shift, ternary maps."""
    from ..report.tables import write_table
    from .report import plot_composition, plot_ternary, shifts_table

    metrics = pd.read_csv(shifts_path, sep="\t")
    models = pd.read_csv(models_path, sep="\t")
    selection = pd.read_csv(selection_path, sep="\t")
    evalsets = list(dict.fromkeys(metrics["evalset"]))
    table = shifts_table(metrics, models, selection, evalsets, config["dataset"])
    sizes = "/".join(str(n) for n in sorted(set(metrics["n"])))
    note = (
        f"Held-out images per shift: {sizes}. Per-shift soups are chosen on the first k adaptation "
        "images of that shift over the simplex grid of the base models "
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
    written = write_table(table, table_stem, f"Soups per distribution shift on {config['dataset']}", note)
    written += plot_composition(selection, base_model_names(config), composition_path)
    if ternary_path is not None:
        spec = config["soups"]["ternary"]
        written += plot_ternary(pd.read_csv(ternary_path, sep="\t"), spec["models"], ternary_figure_path)
    log.info("soups report:\n%s", "\n".join(map(str, written)))
    return written
