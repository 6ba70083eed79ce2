"""Robust distillation's workflow stages (rules of ``workflow/rules/distill.smk``) as plain functions.

``train_teacher`` → ``teacher``: the small model made robust with the
``distill.augmentation`` policy; ``train_student`` → ``student``: the larger
model trained normally (or loaded from ``distill.student.weights``);
``distill_student`` → ``student-multihead``; ``finetune_student`` →
``student-finetuned``: full fine-tuning with the same augmentation, the cost
baseline; ``evaluate_distilled`` → tidy rows on the clean and corrupted test
split; ``report_distill`` → ``metrics/distill.tsv`` and the table. Like :mod:`robustsoup.lp.stages`, each reads paths and writes atomically.

Sidecars record the ``distill.augmentation`` policy under ``training.shift``;
``training.augmentation`` is the crop-and-flip augmentation of the training
section (:mod:`robustsoup.train.augment`). The distillation itself trains on
uncropped images: the clean head's targets are the original student's
logits, computed once per training image.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import pandas as pd
import torch

from ..checkpoint import load_meta, load_model, load_state_dict_checked
from ..config import dataset_name
from ..data import load_split
from ..data.corrupted import corrupted_split, split_head
from ..device import seed_everything
from ..evaluate.registry import make_evaluator
from ..evaluate.rows import METRIC_COLUMNS, MetricLog, read_metrics, write_metrics
from ..io import write_text_atomic
from ..lineage import descend
from ..models.multihead import HEADS, MultiHeadNet
from ..progress import progress
from ..train.policies import CleanInputs
from ..train.run import (
    count_parameters,
    initial_model,
    model_identity,
    new_meta,
    settings_from,
    train_and_checkpoint,
    trainable_modules,
)
from .augmentation import make_augmentation
from .calibration import calibrate_thresholds, calibration_shifted
from .config import (
    DISTILL_MODELS,
    FINETUNED,
    MULTIHEAD,
    STUDENT,
    TEACHER,
    multihead_model_names,
    teacher_shift,
)
from .heads import HeadSignals, head_signals, select_heads, selected_predictions
from .student import freeze_for_distillation, multihead_state_from_student
from .training import DISTILLATION_KEYS, Distillation, DistillSettings

log = logging.getLogger(__name__)


def train_teacher(config: Mapping, train_path, out_path, device) -> Path:
    """The small robust teacher: trained on ``distill.augmentation`` (``distill.teacher.clean_fraction``, else the
    augmentation's, kept clean) from scratch, or from the pretrained robust weights of ``distill.teacher.weights``
    (0 epochs keeps them as they are)."""
    seed_everything(config["seed"])
    d = config["distill"]
    spec = d["teacher"]
    shift = teacher_shift(config)
    policy = make_augmentation(shift, config["seed"])
    record = {
        **spec["training"],
        "shift": shift,
        "policy": policy.name,
        "weights": spec["weights"],
        "seed": config["seed"],
    }
    meta = new_meta(model_identity(config, spec), TEACHER, training=record)
    return train_and_checkpoint(
        initial_model(config, meta, spec),
        meta,
        load_split(train_path),
        policy,
        settings_from(spec["training"], config["seed"], decay_all=bool(spec["weights"])),
        out_path,
        device,
        d["resume"],
    )


def train_student(config: Mapping, train_path, out_path, device) -> Path:
    """The original student: normal (clean) training from scratch, or from ``distill.student.weights``."""
    seed_everything(config["seed"])
    d = config["distill"]
    spec = d["student"]
    record = {**spec["training"], "policy": "clean", "weights": spec["weights"], "seed": config["seed"]}
    meta = new_meta(model_identity(config, spec), STUDENT, training=record)
    return train_and_checkpoint(
        initial_model(config, meta, spec),
        meta,
        load_split(train_path),
        CleanInputs(),
        settings_from(spec["training"], config["seed"], decay_all=bool(spec["weights"])),
        out_path,
        device,
        d["resume"],
    )


def _load_student(config: Mapping, path, device):
    return load_model(path, expect=model_identity(config, config["distill"]["student"]), device=device)


def finetune_student(config: Mapping, student_path, train_path, out_path, device) -> Path:
    """The baseline: every parameter of the student fine-tuned with the same augmentation."""
    seed_everything(config["seed"])
    d = config["distill"]
    spec = d["finetune"]
    student, student_meta = _load_student(config, student_path, device)
    policy = make_augmentation(d["augmentation"], config["seed"])
    record = {**spec, "shift": d["augmentation"], "policy": policy.name, "seed": config["seed"]}
    meta = new_meta(model_identity(config, d["student"]), FINETUNED, training=record)
    descend(meta, student_meta)
    return train_and_checkpoint(
        student,
        meta,
        load_split(train_path),
        policy,
        settings_from(spec, config["seed"], decay_all=True),
        out_path,
        device,
        d["resume"],
        init_sha=student_meta.weights_sha256,
    )


def distill_student(config: Mapping, teacher_path, student_path, train_path, out_path, device) -> Path:
    """The multi-head student: the original student's base and classifier (copied to every head),
    its last block(s) and heads distilled (:func:`robustsoup.distill.distill_multihead`), trained through the
    one runner (:func:`robustsoup.train.run.train_and_checkpoint` with a
    :class:`~robustsoup.distill.training.Distillation`): with ``distill.distillation.gpus`` > 1 it runs as N
    ranks like every training, and only rank 0 writes the checkpoint.
    """
    seed_everything(config["seed"])
    d = config["distill"]
    spec = d["distillation"]
    teacher, teacher_meta = load_model(teacher_path, expect=model_identity(config, d["teacher"]))
    student, student_meta = _load_student(config, student_path, "cpu")
    record = {
        "method": "robust distillation (multi-head)",
        "teacher": TEACHER,
        **spec,
        "multihead": d["multihead"],
        "shift": d["augmentation"],
        "seed": config["seed"],
    }
    meta = new_meta(model_identity(config, d["student"]), MULTIHEAD, training=record)
    descend(meta, student_meta)
    meta.architecture = "multihead"
    meta.model_kwargs = {"base": student_meta.architecture, **student_meta.model_kwargs, **d["multihead"]}
    # The statistics the student's wrapper really uses (fixed ones for timm / zoo bases).
    meta.mean = student.mean.flatten().tolist()
    meta.std = student.std.flatten().tolist()
    model = meta.build()
    state = multihead_state_from_student(student.state_dict(), model.net)
    load_state_dict_checked(model, state, source=f"student {student_path}")
    policy = make_augmentation(d["augmentation"], config["seed"])
    settings = DistillSettings(**{key: spec[key] for key in DISTILLATION_KEYS}, seed=config["seed"])
    freeze_for_distillation(model)
    log.info(
        "distilling %s into %s: %d of %d parameters trainable (%s), %s, %d epochs",
        teacher_meta.name,
        MULTIHEAD,
        count_parameters(model, trainable_only=True),
        count_parameters(model),
        ", ".join(trainable_modules(model)),
        policy.name,
        settings.epochs,
    )
    # The clean head's targets are the original student's logits, computed once in the training (over the ranks).
    distillation = Distillation(teacher, student, Path(out_path).with_suffix(".reference"))
    del student
    return train_and_checkpoint(
        model,
        meta,
        load_split(train_path),
        policy,
        settings,
        out_path,
        device,
        d["resume"],
        init_sha=student_meta.weights_sha256 + teacher_meta.weights_sha256,
        trainer=distillation,
    )


# ----------------------------------------------------------------------------- evaluation


def _row(log: MetricLog, model: str, corruption: str, severity: int, attack: str, correct, labels) -> dict:
    """One tidy row on the test split into ``log``, with its per-point results."""
    return log.add(model, "test", correct, labels, attack=attack, corruption=corruption, severity=severity)


def _corrupted_copy(config: Mapping, directory, clean, n_images: int, corruption: str, severity: int):
    """The first ``n_images`` copies of ``clean`` in ``directory`` corrupted by ``corruption`` at ``severity``."""
    copies = corrupted_split(directory, clean, corruption, severity, config["data"]["severities"])
    return split_head(copies, n_images)


def _corrupted_sets(config: Mapping, directory, clean, n_images: int):
    """(corruption, severity, images, labels) of the first ``n_images`` corrupted copies of ``clean`` in
    ``directory``, for every configured corruption and severity. ``images`` is uint8 (N, 3, H, W) or, for
    a file-list split, a lazy view that decodes the slices asked for."""
    data = config["data"]
    sets = [(c, s) for c in data["corruptions"] for s in sorted(data["severities"])]
    for corruption, severity in progress(sets, "corrupted sets", unit="sets"):
        copies = _corrupted_copy(config, directory, clean, n_images, corruption, severity)
        yield corruption, severity, copies.images, copies.labels


def evaluate_distilled(
    config: Mapping,
    model_path,
    test_path,
    corrupted_test_dir,
    rows_path,
    summary_path,
    device,
    adapt_path=None,
    corrupted_adapt_dir=None,
    points_path=None,
) -> pd.DataFrame:
    """Clean and corrupted test accuracy of one distillation model as tidy rows (rule ``evaluate_distilled``).

    Clean rows use the whole test split; corrupted rows the first
    ``distill.evaluate.n_images`` test images of every configured corruption
    and severity (``data.corruptions`` × ``data.severities``). The multi-head
    student needs the adaptation split too: the thresholds of the ``ours``
    rule are chosen there, then every rule is evaluated (rows
    ``student-multihead`` for ``distill.selection.rule``, attack = the rule's
    name, and ``student-multihead-<rule>`` for each ablation). With ``points_path``, the rows' per-point
    results too (:class:`~robustsoup.evaluate.rows.MetricLog`: what the findings pair).
    """
    seed_everything(config["seed"])
    d = config["distill"]
    model, meta = load_model(model_path, expect={"dataset": dataset_name(config)}, device=device)
    test = load_split(test_path)
    n_images, batch_size = d["evaluate"]["n_images"], d["evaluate"]["batch_size"]
    start, cpu = time.perf_counter(), time.process_time()
    if isinstance(model.net, MultiHeadNet):
        if adapt_path is None or corrupted_adapt_dir is None:
            raise ValueError(
                "the multi-head student's head selection is calibrated on the adaptation split: "
                "pass adapt_path and corrupted_adapt_dir"
            )
        measured, summary = _evaluate_multihead(
            config, model, meta, test, corrupted_test_dir, load_split(adapt_path), corrupted_adapt_dir, device
        )
    else:
        channels_last = config["evaluate"]["channels_last"]
        clean = make_evaluator("clean", data=test, evalset="test", batch_size=batch_size, channels_last=channels_last)
        measured = clean.run(model, meta.name, device)
        corrupted = make_evaluator(
            "corrupted",
            copies=partial(_corrupted_copy, config, corrupted_test_dir, test, n_images),
            corruptions=config["data"]["corruptions"],
            severities=sorted(config["data"]["severities"]),
            evalset="test",
            batch_size=batch_size,
            channels_last=channels_last,
        )
        corrupted.run(model, meta.name, device, measured)
        summary = {"model": meta.name}
    frame = pd.DataFrame(measured.rows, columns=METRIC_COLUMNS)
    summary.update(
        {
            "n_clean": len(test),
            "n_per_corrupted_set": min(n_images, len(test)),
            "seconds": time.perf_counter() - start,
            "cpu_seconds": time.process_time() - cpu,
            "corruptions": list(config["data"]["corruptions"]),
            "severities": list(config["data"]["severities"]),
        }
    )
    write_text_atomic(summary_path, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    measured.write(rows_path, points_path)
    for name, rows in frame.groupby("model", sort=False):
        log.info(
            "%s: clean %.4f, mean corrupted %.4f",
            name,
            rows.loc[rows["corruption"] == "none", "accuracy"].mean(),
            rows.loc[rows["corruption"] != "none", "accuracy"].mean(),
        )
    return frame


def _signals(config: Mapping, model, images, device) -> HeadSignals:
    """Head signals of uint8 ``images`` (a tensor, or a file-list split's lazy view, decoded in batches)."""
    s = config["distill"]["selection"]
    return head_signals(
        model,
        images,
        samples=s["mc_samples"],
        seed=config["seed"],
        uncertainty=s["uncertainty"],
        batch_size=config["distill"]["evaluate"]["batch_size"],
        device=device,
        channels_last=config["evaluate"]["channels_last"],
    )


def _evaluate_multihead(config, model, meta, test, corrupted_test_dir, adapt, corrupted_adapt_dir, device):
    s = config["distill"]["selection"]
    # Calibration on the adaptation split: its clean images and shifted ones (distill.calibration).
    clean_adapt = _signals(config, model, adapt.images, device)
    shifted, labels = [], []
    evaluated_sets = partial(_corrupted_sets, config, corrupted_adapt_dir, adapt)
    for images, y in calibration_shifted(config, adapt.images, adapt.labels, evaluated_sets):
        shifted.append(_signals(config, model, images, device))
        labels.append(y)
    thresholds, record = calibrate_thresholds(
        clean_adapt,
        adapt.labels,
        HeadSignals.cat(shifted),
        torch.cat(labels),
        clean_weight=s["clean_weight"],
        max_clean_drop=s["max_clean_drop"],
        quantiles=s["quantiles"],
        uncertainty=s["uncertainty_threshold"],
        divergence=s["divergence_threshold"],
    )
    record["calibration"] = s["calibration"]
    log.info("head selection calibrated on the adaptation split: %s", record)
    names = {s["rule"]: MULTIHEAD, **{r: f"{MULTIHEAD}-{r}" for r in s["ablate"] if r != s["rule"]}}
    # One log per model, joined in order below: rows grouped by model, clean first (a plain model's order).
    logs = {name: MetricLog() for name in names.values()}
    usage = {r: {"clean": [0, 0, 0], "corrupted": [0, 0, 0]} for r in names}

    def add(signals, labels, corruption, severity):
        for rule, name in names.items():
            choice = select_heads(signals, rule, thresholds, labels)
            correct = selected_predictions(signals, choice) == labels
            _row(logs[name], name, corruption, severity, rule, correct, labels)
            counts = torch.bincount(choice, minlength=len(HEADS)).tolist()
            key = "clean" if corruption == "none" else "corrupted"
            usage[rule][key] = [a + b for a, b in zip(usage[rule][key], counts)]

    add(_signals(config, model, test.images, device), test.labels, "none", 0)
    for corruption, severity, images, y in _corrupted_sets(
        config, corrupted_test_dir, test, config["distill"]["evaluate"]["n_images"]
    ):
        add(_signals(config, model, images, device), y, corruption, severity)
    measured = MetricLog()
    for part in logs.values():
        measured.rows += part.rows
        measured.points += part.points
    fractions = {
        rule: {k: dict(zip(HEADS, (c / max(sum(v), 1) for c in v))) for k, v in u.items()} for rule, u in usage.items()
    }
    summary = {
        "model": meta.name,
        "rule": s["rule"],
        "models": names,
        "thresholds": record,
        "head_usage": fractions,
        "mc_samples": s["mc_samples"],
        "uncertainty": s["uncertainty"],
    }
    return measured, summary


def report_distill(
    config: Mapping,
    metric_paths: Sequence,
    gathered_path,
    sidecar_paths: Sequence,
    summary_paths: Sequence,
    table_stem,
    figure_path=None,
) -> list[Path]:
    """Rule ``report_distill``: the distillation models' rows in one tidy table (``gathered_path``,
    i.e. ``metrics/distill.tsv``), then the distillation table (CSV + Markdown + HTML page) from them
    and the checkpoints' sidecars, and with ``figure_path`` (.png) the table at a glance as a figure
    (PNG + PDF + HTML page)."""
    from .report import distill_table, plot_distill, write_distill_table

    metrics = read_metrics(list(metric_paths))
    write_metrics(metrics, gathered_path)
    metas = {m.name: m for m in (load_meta(p) for p in sidecar_paths)}
    summaries = [json.loads(Path(p).read_text(encoding="utf-8")) for p in summary_paths]
    table = distill_table(metrics, metas, multihead_model_names(config))
    written = write_distill_table(table, metas, summaries, table_stem, dataset_name(config))
    if figure_path is not None:
        written += plot_distill(table, figure_path)
    return written


__all__ = [
    "DISTILL_MODELS",
    "distill_student",
    "evaluate_distilled",
    "finetune_student",
    "multihead_model_names",
    "report_distill",
    "train_student",
    "train_teacher",
]
