"""The pipeline's stages as plain functions: what each workflow rule does.

Each function reads its inputs from paths, writes its outputs atomically and
returns what it wrote; the workflow scripts only pass ``snakemake.*`` in.
Usable without Snakemake (the CLI and the tests call them directly).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd
import torch

from .checkpoint import CheckpointMeta, load_checkpoint, load_model, load_state_dict_checked, save_checkpoint
from .config import base_model_names, parent_name
from .data import get_dataset_spec, load_split
from .device import seed_everything
from .evaluate import evaluate_clean_and_adversarial, read_metrics, write_metrics
from .io import write_text_atomic
from .models import build_model
from .models.batchnorm import recompute_batchnorm_statistics
from .report import accuracy_table, attack_summary, evaluation_note, plot_soup_line, soup_line_points, write_table
from .train import TrainSettings, make_input_policy, train_model
from .weights import affine_combination

log = logging.getLogger(__name__)


def model_identity(config: Mapping) -> dict:
    """Sidecar fields every checkpoint of this run must match."""
    model = config["model"]
    return {
        "architecture": model["architecture"],
        "dataset": config["dataset"],
        "model_kwargs": {"width": model["width"], "activation": model["activation"]},
    }


def _new_meta(config: Mapping, name: str, **fields) -> CheckpointMeta:
    spec = get_dataset_spec(config["dataset"])
    identity = model_identity(config)
    return CheckpointMeta(
        name=name,
        architecture=identity["architecture"],
        model_kwargs=identity["model_kwargs"],
        dataset=identity["dataset"],
        num_classes=spec.num_classes,
        mean=list(spec.mean),
        std=list(spec.std),
        **fields,
    )


def _training_record(config: Mapping, training: Mapping) -> dict:
    norm = training["norm"]
    eps = config["threats"][norm] if norm != "none" else None
    return {**training, "eps": eps, "attack": make_input_policy(norm, eps, training["attack_steps"], 0).name,
            "seed": config["seed"]}


def _run_training(config, name, training, train_path, out_path, device, init_state=None, parent=None) -> Path:
    seed_everything(config["seed"])
    spec = get_dataset_spec(config["dataset"])
    meta = _new_meta(config, name, training=_training_record(config, training), parent=parent)
    model = build_model(meta.architecture, spec.num_classes, spec.mean, spec.std, **meta.model_kwargs)
    if init_state is not None:
        load_state_dict_checked(model, init_state, source=f"parent {parent}")
    data = load_split(train_path)
    norm = training["norm"]
    policy = make_input_policy(norm, meta.training["eps"], training["attack_steps"], config["seed"])
    settings = TrainSettings(
        epochs=training["epochs"], lr=training["lr"], schedule=training["schedule"],
        batch_size=training["batch_size"], momentum=training["momentum"],
        weight_decay=training["weight_decay"], seed=config["seed"],
    )
    log.info("training %s: %s, %d epochs on %d images, device %s", name, policy.name, settings.epochs,
             len(data), device)
    start = time.perf_counter()
    history = train_model(model, data, policy, settings, device)
    meta.metrics = {"train_history": history, "train_seconds": time.perf_counter() - start}
    save_checkpoint(out_path, model.state_dict(), meta)
    log.info("wrote %s", out_path)
    return Path(out_path)


def pretrain_parent(config: Mapping, train_path, out_path, device: torch.device) -> Path:
    """Adversarially train the parent from scratch (``pretrain`` in the config)."""
    return _run_training(config, parent_name(config), config["pretrain"], train_path, out_path, device)


def finetune_from_parent(config: Mapping, target: str, parent_path, train_path, out_path, device) -> Path:
    """Fine-tune the parent towards ``finetune[target]`` (e.g. L2, L1 or nominal training).

    Starts from all of the parent's tensors, BatchNorm statistics included.
    """
    if target not in config["finetune"]:
        raise KeyError(f"fine-tune target {target!r} is not in the config; expected one of {list(config['finetune'])}")
    state, parent_meta = load_checkpoint(parent_path, expect=model_identity(config))
    name = f"{parent_name(config)}-{target}"
    return _run_training(config, name, config["finetune"][target], train_path, out_path, device,
                         init_state=state, parent=parent_meta.name)


def make_soup(config: Mapping, soup_id: str, weights: Mapping[str, float], model_paths: Mapping[str, str],
              train_path, out_path, device: torch.device | str = "cpu") -> Path:
    """Write the soup Σ wᵢθᵢ over the base models as a checkpoint of its own.

    BatchNorm statistics are mixed or re-estimated on training images, as
    ``soups.batchnorm`` says.
    """
    names = [n for n in base_model_names(config) if n in weights]
    identity = model_identity(config)
    states = [load_checkpoint(model_paths[n], expect=identity)[0] for n in names]
    combined = affine_combination(states, [weights[n] for n in names], names=names)
    spec = config["soups"]
    meta = _new_meta(config, soup_id, provenance={"soup": {n: weights[n] for n in names},
                                                  "batchnorm": spec["batchnorm"]})
    if spec["batchnorm"] == "recompute":
        seed_everything(config["seed"])
        model = meta.build()
        load_state_dict_checked(model, combined, source=soup_id)
        images = load_split(train_path).images[: spec["batchnorm_images"]]
        recompute_batchnorm_statistics(model, images, device=device)
        meta.provenance["batchnorm_images"] = len(images)
        combined = model.state_dict()
    save_checkpoint(out_path, combined, meta)
    return Path(out_path)


def evaluate_checkpoint(config: Mapping, model_path, split_path, out_path, device) -> pd.DataFrame:
    """Clean, per-norm and union accuracy of one checkpoint on one split (``evaluate``)."""
    seed_everything(config["seed"])
    model, meta = load_model(model_path, expect=model_identity(config), device=device)
    data = load_split(split_path)
    spec = config["evaluate"]
    threats = {norm: config["threats"][norm] for norm in spec["threats"]}
    frame = evaluate_clean_and_adversarial(
        model, meta.name, data, threats, n_attacked=min(spec["n_images"], len(data)),
        n_iter=spec["n_iter"], n_restarts=spec["n_restarts"], seed=config["seed"],
        batch_size=spec["batch_size"], device=device,
    )
    write_metrics(frame, out_path)
    return frame


def gather_metrics(paths: Sequence, out_path) -> pd.DataFrame:
    """Concatenate every metric file into ``metrics/all.tsv``."""
    frame = read_metrics(paths)
    write_metrics(frame, out_path)
    return frame


def build_report(config: Mapping, metrics_path, grid_path, table_stem, figure_paths: Sequence) -> list[Path]:
    """The accuracy table (CSV + Markdown) and one soup-line figure per configured line."""
    metrics = pd.read_csv(metrics_path, sep="\t")
    grid = pd.read_csv(grid_path, sep="\t")
    order = base_model_names(config) + list(grid["id"])
    note = evaluation_note(metrics)
    written = write_table(accuracy_table(metrics, order, grid), table_stem,
                          f"Clean and robust accuracy on {config['dataset']}", note)
    for (a, b), path in zip(config["soups"]["lines"], figure_paths):
        points = soup_line_points(metrics, grid, a, b)
        written += plot_soup_line(points, a, b, path, subtitle=attack_summary(metrics))
    summary = "\n".join(str(p) for p in written) + "\n"
    log.info("report written:\n%s", summary)
    return written


def write_lines(path, lines: Sequence[str]) -> None:
    """A small text artifact, atomically."""
    write_text_atomic(path, "\n".join(lines) + "\n")
