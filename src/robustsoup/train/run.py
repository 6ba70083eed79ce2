"""Train and checkpoint: the one runner every study trains through, and the model a run is about.

:func:`train_and_checkpoint` resolves the arithmetic for the device, trains
with resume (a killed job continues after its last epoch), records what it
cost and writes the checkpoint atomically; lp, rws and distill call it with
their own model, sidecar, data and input policy (and the multi-head distillation
with its own :class:`Trainer`). :func:`launch_ranks` runs a training of
``gpus: N`` as N local ranks. :func:`model_identity` (the one identity of a
model spec), :func:`new_meta` and :func:`starting_model` (a checkpoint, or
:func:`initial_model`: pretrained or fresh, through
:func:`robustsoup.models.create_model`) say which model a config trains.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from ..checkpoint import CheckpointMeta, load_checkpoint, load_state_dict_checked, save_checkpoint
from ..config import dataset_name
from ..data import ImageSplit, get_dataset_spec
from ..data import options as loading_options
from ..data.imagefolder import portable_specs, register_portable, sidecar_provenance
from ..data.splits import split_record
from ..device import configure_cuda
from ..facts import current_facts
from ..lineage import descend, start_record
from ..models import ZOO_PREFIX, create_model, input_statistics, zoo_weights_path
from . import distributed as dist_
from .augment import describe_augmentation
from .loop import BestEpoch, TrainSettings, train_model
from .policies import InputPolicy

log = logging.getLogger(__name__)


def model_identity(config: Mapping, spec: Mapping | None = None) -> dict:
    """Sidecar fields every checkpoint of a run's model must match: the one identity of a model spec, the
    run's model (``config["model"]``, the default) or a study's (``distill.teacher``, ``distill.student``).

    ``model_kwargs`` are the architecture's ``width`` and ``activation``; a RobustBench entry of a spec that
    names its threat (``model.zoo_threat``) has the data set and threat instead (a spec without the key, such as
    a distillation student's, keeps width and activation, which the zoo entry ignores).
    """
    spec = config["model"] if spec is None else spec
    if spec["architecture"].startswith(ZOO_PREFIX) and "zoo_threat" in spec:
        kwargs = {"dataset": config["dataset"], "threat": spec["zoo_threat"]}
    else:
        kwargs = {"width": spec["width"], "activation": spec["activation"]}
    return {"architecture": spec["architecture"], "dataset": dataset_name(config), "model_kwargs": kwargs}


def new_meta(identity: Mapping, name: str, **fields) -> CheckpointMeta:
    """The sidecar of a new checkpoint of ``identity`` (architecture, model_kwargs, dataset): classes
    and input statistics come from the data set (or the architecture's own, for zoo models)."""
    spec = get_dataset_spec(identity["dataset"])
    if spec.mean is None:
        raise ValueError(
            f"data set {spec.name}: its normalization is computed from the training images by prepare_data, "
            "and no train split with it was found; run prepare_data first (or give data.mean and data.std)"
        )
    mean, std = input_statistics(identity["architecture"], spec.mean, spec.std)
    if spec.class_names is not None:  # an ImageFolder: the label names, in label order, and the resolution
        fields.setdefault("provenance", {}).update(sidecar_provenance(spec))
    return CheckpointMeta(
        name=name,
        architecture=identity["architecture"],
        model_kwargs=dict(identity["model_kwargs"]),
        dataset=identity["dataset"],
        num_classes=spec.num_classes,
        mean=list(mean),
        std=list(std),
        **fields,
    )


def initial_model(config: Mapping, meta: CheckpointMeta, spec: Mapping | None = None) -> nn.Module:
    """The model of ``spec`` (default ``config["model"]``; see :func:`model_identity`) before training, from
    :func:`~robustsoup.models.create_model`: pretrained weights when the spec names any (a RobustBench zoo
    entry, read from ``model_dir`` for ``zoo_threat``, or a local ``weights`` file; the file is the root of
    ``meta.lineage`` and is recorded in ``meta.provenance``), else a fresh initialisation."""
    spec = config["model"] if spec is None else spec
    zoo = meta.architecture.startswith(ZOO_PREFIX)
    weights, model_dir, threat = spec["weights"], spec.get("model_dir", "models"), spec.get("zoo_threat", "Linf")
    if not (zoo or weights):
        return meta.build()
    meta.provenance["initial_weights"] = weights or meta.architecture
    net = create_model(
        meta.architecture,
        meta.num_classes,
        meta.mean,
        meta.std,
        pretrained=zoo,
        weights=weights,
        model_dir=model_dir,
        provenance=meta.provenance,
        **{"dataset": config["dataset"], "threat": threat, **meta.model_kwargs},
    )
    source = weights or zoo_weights_path(
        meta.architecture.removeprefix(ZOO_PREFIX), config["dataset"], threat, model_dir
    )
    meta.lineage = [start_record(net.state_dict(), None, source, str(weights or meta.architecture))]
    return net


def starting_model(
    config: Mapping, meta: CheckpointMeta, init_path=None, spec: Mapping | None = None
) -> tuple[nn.Module, str]:
    """The model a training starts from and the SHA-256 of its weights ('' for a fresh or pretrained
    start): the checkpoint at ``init_path`` (which must be a model of ``spec``, :func:`model_identity`; it
    becomes ``meta.parent``), else :func:`initial_model`."""
    if init_path is None:
        return initial_model(config, meta, spec), ""
    state, init_meta = load_checkpoint(init_path, expect=model_identity(config, spec))
    model = meta.build()
    load_state_dict_checked(model, state, source=f"starting point {init_path}")
    descend(meta, init_meta)
    return model, init_meta.weights_sha256


def settings_from(training: Mapping, seed: int, decay_all: bool) -> TrainSettings:
    """:class:`TrainSettings` from a config training section (the schema's ``$defs/training`` keys: every
    section :func:`robustsoup.config.training_sections` lists but ``distill.distillation``)."""
    return TrainSettings(
        epochs=training["epochs"],
        lr=training["lr"],
        schedule=training["schedule"],
        batch_size=training["batch_size"],
        momentum=training["momentum"],
        weight_decay=training["weight_decay"],
        seed=seed,
        decay_all=decay_all,
        precision=training["precision"],
        channels_last=training["channels_last"],
        exempt_lr=training["exempt_lr"],
        augmentation=training["augmentation"],
        gpus=training.get("gpus", 1),
        nodes=training.get("nodes", 1),
        sync_batchnorm=training.get("sync_batchnorm", False),
        compile=training.get("compile", False),
    )


def interrupted_message(name: str, epochs: int, resume_path: Path | None) -> str:
    """The one line a training stopped by Ctrl-C ends with: what stopped and where a rerun starts."""
    done = 0
    if resume_path is not None and resume_path.is_file():
        try:
            done = int(torch.load(resume_path, map_location="cpu", weights_only=True, mmap=True)["epoch"])
        except Exception:
            done = 0
    if resume_path is None:
        where = "resume is off for this training (resume: false), so a rerun starts again from epoch 1"
    elif done:
        where = f"a rerun resumes after epoch {done} from {resume_path}"
    else:
        where = "no epoch had finished, so a rerun starts from epoch 1"
    return f"robustsoup: interrupted (Ctrl-C) while training {name}, {done} of {epochs} epochs done; {where}"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def trainable_modules(model: nn.Module) -> list[str]:
    """The modules of ``model`` that own a parameter that requires a gradient, sorted."""
    return sorted({name.rsplit(".", 1)[0] for name, p in model.named_parameters() if p.requires_grad})


class Trainer(Protocol):
    """What :func:`train_and_checkpoint` trains with: :func:`~robustsoup.train.loop.train_model`'s signature."""

    def __call__(
        self,
        model: nn.Module,
        data: ImageSplit,
        policy: InputPolicy,
        settings: TrainSettings,
        device: torch.device,
        *,
        resume_path: Path | None,
        fingerprint: str,
        distributed: dist_.Distributed | None,
        best: BestEpoch | None,
    ) -> list[dict]: ...


class _InRank:
    """``fn`` as a rank that :func:`~robustsoup.train.distributed.run_as_ranks` spawned runs it: a new
    process, so it first takes the launching job's data loading options (``loading``, the options' fields),
    CUDA settings (``tf32``) and ImageFolder specs (registered by resolving the config, which a rank does
    not). Named after ``fn`` (the launch's log line names what runs)."""

    def __init__(self, fn: Callable, loading: dict, tf32: bool) -> None:
        self.fn, self.loading, self.tf32 = fn, loading, tf32
        self.datasets = portable_specs()
        self.__name__ = fn.__name__

    def __call__(self, *args) -> None:
        register_portable(self.datasets)
        loading_options.configure(self.loading)
        if torch.cuda.is_available():
            configure_cuda(self.tf32)
        self.fn(*args)


def launch_ranks(
    fn: Callable, gpus: int, *args, device: torch.device, nodes: int = 1, call_path: str | None = None
) -> None:
    """Run ``fn(*args)`` as ``gpus`` ranks of this job and wait: the one launch of every training that finds
    itself one plain process with ``gpus`` > 1 (:func:`~robustsoup.train.distributed.launch_needed`).

    :func:`~robustsoup.train.distributed.run_as_ranks` (local processes, or inside a SLURM job a step of
    ``gpus`` tasks on ``nodes`` nodes, the call saved at ``call_path``) with this job's data loading options
    and TF32 setting carried into every rank; ``fn`` then forms its group with
    :func:`~robustsoup.train.distributed.from_environment` and only rank 0 writes.
    """
    job = _InRank(fn, vars(loading_options.current()), torch.backends.cuda.matmul.allow_tf32)
    dist_.run_as_ranks(job, gpus, *args, device=device, nodes=nodes, call_path=call_path)


def train_and_checkpoint(
    model: nn.Module,
    meta: CheckpointMeta,
    data: ImageSplit,
    policy: InputPolicy,
    settings: TrainSettings,
    out_path: str | Path,
    device: torch.device,
    resume: bool = True,
    init_sha: str = "",
    best: BestEpoch | None = None,
    trainer: Trainer = train_model,
) -> Path:
    """Train ``model`` in place and write it with ``meta`` to ``out_path``; return the path.

    ``trainer`` trains: :func:`~robustsoup.train.loop.train_model` (the supervised step) unless a study
    brings its own :class:`Trainer` (the multi-head distillation's, ``distill.training.Distillation``); the
    rest — ranks, settings resolved once for the device, the sidecar's record, resume, timing, the
    checkpoint — is the same for every training.

    ``settings``' auto precision and memory format are resolved for ``device``
    and recorded in ``meta.training``, with the augmentation (``augmentation``
    as asked, ``augmentation_ops`` what it does to the data set's images,
    e.g. ``pad-crop(4)+flip``) and ``exempt_lr``. With ``resume`` the state is saved
    every epoch beside the output (``<name>.resume.pt``) and a killed run
    continues from it, provided the training record, the model identity and
    ``init_sha`` (the SHA-256 of the starting weights) are the same; it is
    deleted once the checkpoint is written. The sidecar's ``metrics`` get the
    history, wall and CPU seconds and parameter counts. A diverging loss
    raises :class:`~robustsoup.train.loop.TrainingDivergedError` and writes nothing.

    ``best`` (a :class:`~robustsoup.train.loop.BestEpoch`): the checkpoint holds
    the epoch it scores highest instead of the last; ``meta.training['selection']``
    names the score (so the choice is part of the resume fingerprint) and the
    sidecar's metrics get ``selected_epoch`` and ``selection_score``.

    With ``settings.gpus`` > 1 called in one plain process (a job that asked
    for ``gpu=N``), this launches itself as ``gpus`` ranks with the same
    arguments (:func:`robustsoup.train.distributed.run_as_ranks`: local processes,
    or inside a SLURM job a step of ``gpus`` tasks on ``settings.nodes`` nodes; ``model``
    is moved to the CPU first), waits for them and loads the checkpoint they wrote
    into ``model`` and ``meta``. In a rank (launched so, by torchrun or as a
    SLURM step of ``gpus`` tasks: :func:`~robustsoup.train.distributed.from_environment`;
    ``device`` becomes the rank's GPU) the sidecar records
    ``training.distributed``, only rank 0 writes the checkpoint and deletes the
    resume state, and every rank returns once the checkpoint exists.
    """
    if not meta.lineage:  # trained from scratch: the lineage's root is this initialization
        meta.lineage = [start_record(model.state_dict(), settings.seed, None, f"{meta.architecture} init")]
    if dist_.launch_needed(settings.gpus):
        model.cpu()
        args = (model, meta, data, policy, settings, out_path, device, resume, init_sha, best, trainer)
        launch_ranks(
            train_and_checkpoint,
            settings.gpus,
            *args,
            device=device,
            nodes=settings.nodes,
            call_path=str(Path(out_path).with_suffix(".ranks.pkl")),
        )
        state, written = load_checkpoint(out_path)
        model.load_state_dict(state)
        vars(meta).update(vars(written))
        settings.arithmetic(device, model)  # what the ranks computed in, for this job's record
        current_facts().compiled_model(settings.compile)
        return Path(out_path)
    distributed = dist_.from_environment(settings.gpus, device, settings.sync_batchnorm)
    if distributed is not None:
        device = distributed.device(device)
    meta.training = {} if meta.training is None else meta.training
    # The images trained on, from the split's header (images, split seed, data.train_per_class); part of the
    # resume fingerprint, so a run on another subset never resumes from this one's state.
    meta.training["train_split"] = split_record(data)
    settings = settings.resolved(device, meta.training, model)
    meta.training.update(
        augmentation=settings.augmentation,
        augmentation_ops=describe_augmentation(settings.augmentation, meta.dataset),
        exempt_lr=settings.exempt_lr,
    )
    if distributed is not None:
        meta.training["distributed"] = distributed.record()
    if best is not None:
        meta.training["selection"] = best.name
    resume_path = Path(out_path).with_suffix(".resume.pt") if resume else None
    identity = {"architecture": meta.architecture, "model_kwargs": meta.model_kwargs, "dataset": meta.dataset}
    fingerprint = json.dumps(
        {"training": meta.training, "identity": identity, "init": init_sha}, sort_keys=True, default=str
    )
    log.info(
        "training %s: %s, %d epochs on %d images from %s, device %s",
        meta.name,
        policy.name,
        settings.epochs,
        len(data),
        meta.parent or "scratch",
        device,
    )
    start, cpu = time.perf_counter(), time.process_time()
    try:
        history = trainer(
            model,
            data,
            policy,
            settings,
            device,
            resume_path=resume_path,
            fingerprint=fingerprint,
            distributed=distributed,
            best=best,
        )
    except KeyboardInterrupt:
        print(interrupted_message(meta.name, settings.epochs, resume_path), file=sys.stderr, flush=True)
        raise SystemExit(130) from None
    seconds = time.perf_counter() - start
    n, tuned = count_parameters(model), count_parameters(model, trainable_only=True)
    meta.metrics = {
        "train_history": history,
        "train_seconds": seconds,
        "train_cpu_seconds": time.process_time() - cpu,
        "parameters": n,
        "trainable_parameters": tuned if settings.epochs else 0,
        **(best.record() if best is not None else {}),
    }
    if tuned < n:  # part of the model was frozen (the multi-head student's base): which modules were tuned
        meta.metrics["trainable"] = trainable_modules(model)
    if distributed is None or distributed.is_main:
        save_checkpoint(out_path, model.state_dict(), meta)
        if resume_path is not None and resume_path.exists():
            resume_path.unlink()
        log.info("wrote %s (%.1fs of training)", out_path, seconds)
    if distributed is not None:
        distributed.barrier()  # no rank goes on before the checkpoint exists
    return Path(out_path)
