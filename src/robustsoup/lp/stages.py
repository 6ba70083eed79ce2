"""Robust fine-tuning's stages (rules of ``workflow/rules/lp.smk``) as plain functions: the parent,
the from-scratch references, the fine-tunes, every model's evaluation, the accuracy table. The soups
between them are the soups study's (:mod:`robustsoup.soups.stages`).

Each function reads its inputs from paths, writes its outputs atomically and
returns what it wrote; the workflow scripts only pass ``snakemake.*`` in.
Usable without Snakemake (the CLI and the tests call them directly).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from ..attacks import attack_batch_size, attack_plan
from ..checkpoint import (
    load_meta,
    load_model,
)
from ..config import base_model_names, parent_name, reference_names, reference_norm
from ..data import load_split
from ..device import seed_everything
from ..evaluate.adversarial import evaluation_shard, merge_shards, union_rows
from ..evaluate.registry import make_evaluator
from ..evaluate.rows import METRIC_COLUMNS, read_metrics, write_metrics
from ..io import write_text_atomic
from ..points import read_points, write_points
from ..report import evaluation_note, write_table
from ..train.policies import make_input_policy
from ..train.run import model_identity, new_meta, settings_from, starting_model, train_and_checkpoint
from .captions import LP_REPORT
from .report import accuracy_table, add_training_columns

log = logging.getLogger(__name__)


def _training_record(config: Mapping, training: Mapping) -> dict:
    norm = training["norm"]
    norms = [] if norm == "none" else ([norm] if isinstance(norm, str) else list(norm))
    steps = training["attack_steps"] if norms else 0
    return {
        **training,
        "norms": norms,
        "eps": {n: config["threats"][n] for n in norms},
        "attack_steps": steps,
        "seed": config["seed"],
        # Forward-backward passes per training image: the attack's steps plus the update.
        "cost": training["epochs"] * (steps + 1),
    }


def _run_training(config, name, training, train_path, out_path, device, init_path=None) -> Path:
    seed_everything(config["seed"])
    meta = new_meta(model_identity(config), name, training=_training_record(config, training))
    model, init_sha = starting_model(config, meta, init_path)
    policy = make_input_policy(
        training["norm"], config["threats"], training["attack_steps"], attack=training["attack"], seed=config["seed"]
    )
    settings = settings_from(training, config["seed"], decay_all=init_path is not None)
    data = load_split(train_path)
    return train_and_checkpoint(model, meta, data, policy, settings, out_path, device, training["resume"], init_sha)


def pretrain(config: Mapping, train_path, out_path, device: torch.device) -> Path:
    """Adversarially train the parent from scratch (``pretrain`` in the config)."""
    return _run_training(config, parent_name(config), config["pretrain"], train_path, out_path, device)


def pretrain_reference(config: Mapping, reference: str, train_path, out_path, device: torch.device) -> Path:
    """Train reference model ``reference`` (``scratch-<norm>``) from scratch: the parent's settings and budget
    (``pretrain``) against another norm, the robust-finetuning paper's comparison for a fine-tune."""
    training = {**config["pretrain"], "norm": reference_norm(config, reference)}
    return _run_training(config, reference, training, train_path, out_path, device)


def finetune(config: Mapping, target: str, parent_path, train_path, out_path, device) -> Path:
    """Fine-tune the parent towards ``finetune[target]`` (e.g. L2, L1 or nominal training).

    Starts from all of the parent's tensors, BatchNorm statistics included.
    """
    if target not in config["finetune"]:
        raise KeyError(f"fine-tune target {target!r} is not in the config; expected one of {list(config['finetune'])}")
    name = f"{parent_name(config)}-{target}"
    return _run_training(config, name, config["finetune"][target], train_path, out_path, device, parent_path)


def _load_for_evaluation(config: Mapping, model_path, split_path, device):
    seed_everything(config["seed"])
    model, meta = load_model(model_path, expect=model_identity(config), device=device)
    return model, meta, load_split(split_path)


def evaluate_model(config: Mapping, model_path, split_path, outputs: Mapping[str, tuple], device) -> pd.DataFrame:
    """Clean accuracy and robust accuracy under every configured norm of one checkpoint (rule
    ``evaluate_model``), in one process: the model and the split are loaded once.

    ``outputs`` maps ``clean`` and each norm of ``evaluate.threats`` to its
    (rows, points) paths: one tidy row and the per-point results per threat,
    so that union accuracy is counted from the points. Returns every row.
    """
    return _evaluate_shard(config, model_path, split_path, outputs, device, 0, 1)


def evaluate_model_shard(
    config: Mapping, shard: int, model_path, split_path, outputs: Mapping[str, tuple], device
) -> pd.DataFrame:
    """Shard ``shard`` (0 … ``evaluate.shards`` − 1) of :func:`evaluate_model` (rule ``evaluate_model_shard``):
    the same files for its contiguous share of the points (:func:`robustsoup.evaluate.adversarial.evaluation_shard`),
    which :func:`merge_model_shards` joins into exactly what one job writes. Returns its rows."""
    return _evaluate_shard(config, model_path, split_path, outputs, device, shard, config["evaluate"]["shards"])


def _evaluate_shard(config, model_path, split_path, outputs: Mapping[str, tuple], device, shard: int, count: int):
    threats = _evaluated_threats(config, outputs)
    model, meta, data = _load_for_evaluation(config, model_path, split_path, device)
    spec = config["evaluate"]
    plans = {n: attack_plan(spec["mode"], n, meta.num_classes, spec["n_iter"], spec["n_restarts"]) for n in threats[1:]}
    n_attacked = min(spec["n_images"], len(data))
    batch_size = attack_batch_size(spec["batch_size"], device, data.images.shape[-1])
    part = evaluation_shard(n_attacked, len(data), batch_size, count, shard)
    if count > 1:
        log.info(
            "%s shard %d of %d: attacked points %d–%d of %d (batches of %d), clean points %d–%d of %d",
            meta.name,
            shard,
            count,
            part.start,
            part.stop - 1,
            n_attacked,
            batch_size,
            part.start,
            part.clean_stop - 1,
            len(data),
        )
    if part.start == part.stop:
        log.warning(
            "%s shard %d of %d attacks no point: %d attacked points make %d batches of %d. Lower evaluate.shards "
            "or evaluate.batch_size (a new batch size changes the random starts).",
            meta.name,
            shard,
            count,
            n_attacked,
            -(-n_attacked // batch_size),
            batch_size,
        )
    threats = make_evaluator(
        "adversarial",
        data=data,
        eps=config["threats"],
        plans=plans,
        n_attacked=n_attacked,
        seed=config["seed"],
        batch_size=batch_size,
        shard=part,
        channels_last=config["evaluate"]["channels_last"],
    )
    results = threats.run(model, meta.name, device)
    for threat, (rows, points) in results.items():
        rows_path, points_path = outputs[threat]
        write_points(points, points_path)
        write_metrics(rows, rows_path)
    return pd.concat([rows for rows, _ in results.values()], ignore_index=True)


def _evaluated_threats(config: Mapping, outputs: Mapping) -> list[str]:
    """``clean`` and the norms of ``evaluate.threats``, checked against the outputs given and the ε configured."""
    threats = ["clean", *config["evaluate"]["threats"]]
    if set(outputs) != set(threats):
        raise KeyError(f"the evaluation writes {threats}; outputs were given for {sorted(outputs)}")
    unknown = [n for n in threats[1:] if n not in config["threats"]]
    if unknown:
        raise KeyError(f"no ε configured for norms {unknown}; expected them among {list(config['threats'])}")
    return threats


def merge_model_shards(
    config: Mapping, shards: Mapping[str, tuple[Sequence, Sequence]], outputs: Mapping[str, tuple]
) -> pd.DataFrame:
    """Join the shards of one model's evaluation (rule ``merge_model_shards``) into the files
    :func:`evaluate_model` writes: per threat, the shards' per-point files concatenated in point order and
    the row counted again from them (:func:`robustsoup.evaluate.adversarial.merge_shards`).

    ``shards`` maps ``clean`` and each norm to (row files, per-point files) of every shard in shard order;
    ``outputs`` maps them to the (rows, points) paths to write. Returns every row.
    """
    threats = _evaluated_threats(config, outputs)
    if set(shards) != set(threats):
        raise KeyError(f"merging needs the shards of {threats}; shards were given for {sorted(shards)}")
    count = config["evaluate"]["shards"]
    merged = {}
    for threat in threats:
        row_files, point_files = shards[threat]
        if len(row_files) != count or len(point_files) != count:
            raise ValueError(
                f"{threat}: evaluate.shards is {count}; got {len(row_files)} row and {len(point_files)} per-point "
                "files. Give every shard's files in shard order."
            )
        merged[threat] = merge_shards(
            [read_metrics([path]) for path in row_files], [read_points(path) for path in point_files]
        )
    for threat, (rows, points) in merged.items():
        rows_path, points_path = outputs[threat]
        write_points(points, points_path)
        write_metrics(rows, rows_path)
    return pd.concat([rows for rows, _ in merged.values()], ignore_index=True)


def gather_metrics(
    config: Mapping,
    models: Sequence[str],
    metrics_dir,
    out_path,
    evalset: str = "test",
    studies: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    """Concatenate every metric file into ``metrics/all.tsv``, with a ``study`` column.

    The per-model files (``metrics/<model>/<evalset>/<threat>.tsv``) form the
    ``lp`` study (clean and robust accuracy), with union accuracy counted
    from their per-point files; ``studies`` maps other study names (e.g.
    ``soups-shifts``) to gathered files of tidy rows.
    """
    metrics_dir = Path(metrics_dir)
    threats = ["clean", *config["evaluate"]["threats"]]
    frames = []
    for model in models:
        folder = metrics_dir / model / evalset
        rows = read_metrics([folder / f"{t}.tsv" for t in threats])
        points = {("none" if t == "clean" else t): read_points(folder / f"{t}.points.tsv") for t in threats}
        attacks = dict(zip(rows["threat"], rows["attack"]))
        frames += [rows, union_rows(model, evalset, points, attacks)]
    lp = pd.concat([f for f in frames if not f.empty], ignore_index=True)
    lp.insert(0, "study", "lp")
    gathered = [lp]
    for study, path in (studies or {}).items():
        frame = read_metrics([path])
        frame.insert(0, "study", study)
        gathered.append(frame)
    frame = pd.concat(gathered, ignore_index=True)
    write_text_atomic(out_path, frame[["study", *METRIC_COLUMNS]].to_csv(sep="\t", index=False))
    return frame


def report_lp(
    config: Mapping,
    models: Sequence[str],
    studies: Mapping[str, str],
    soups: Mapping[str, str],
    gathered_path,
    sidecar_paths: Sequence,
    table_stem,
) -> list[Path]:
    """Rule ``report_lp``: every study's metrics in ``metrics/all.tsv`` (:func:`gather_metrics`, from the
    folder that ``gathered_path`` sits in) and the accuracy table (``table_stem`` with any suffix: its .csv,
    .md and .html are written).

    The table has robust-finetuning's columns: clean, per-norm and union
    accuracy, and for trained models what they were trained for and the
    training cost, read from the checkpoints' sidecars. Its rows are the
    base models, the references and the evaluated soups (``soups``: {soup id:
    its weights as text}, in grid order, the soups study's grid as the
    workflow names it).
    """
    metrics = gather_metrics(config, models, Path(gathered_path).parent, gathered_path, studies=studies)
    metrics = metrics[metrics["study"] == "lp"]
    metas = [load_meta(path) for path in sidecar_paths]
    order = base_model_names(config) + reference_names(config) + list(soups)
    note = evaluation_note(metrics)
    table = add_training_columns(
        accuracy_table(metrics, order, soups), {m.name: m.training for m in metas}, {m.name: m.parent for m in metas}
    )
    written = write_table(
        table,
        table_stem,
        f"Clean and robust accuracy on {config['dataset']}",
        note + ". Cost: forward-backward passes per training image, epochs × (attack steps + 1)",
        LP_REPORT.caption("accuracy"),
    )
    log.info("report written:\n%s", "\n".join(str(p) for p in written))
    return written
