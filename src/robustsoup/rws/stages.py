"""Robust Weight Signatures as pipeline stages: what each rule of ``workflow/rules/rws.smk`` does.

Models (all under ``results/<dataset>/models/rws/``):

- ``init``: the shared initialization, clean-trained (from the configured pretrained weights if
  any, else from scratch) — the paper's second option ("first train a standard model from
  scratch, and use it as θ₀"); the paper's default is an ImageNet-pretrained θ₀, which this is
  with ``model.weights`` set.
- ``standard``: fine-tuned from ``init`` on clean images; ``expert-<c>``: fine-tuned from ``init``
  on images corrupted by ``c`` at ``rws.severities``; ``augment``: fine-tuned from ``init`` on all
  ``rws.corruptions`` at once (a fraction of the images kept clean) — the data-augmentation
  baseline. One optimizer for all (``rws.finetune``; the reference uses SGD lr 0.01, momentum
  0.9, weight decay 5e-4, step decay).
- ``standard-s<seed>-own`` / ``standard-s<seed>-shared``: other standard models (seed
  ``rws.transfer.seed``), the targets of the transfer experiment, fine-tuned from their own
  initialization ``init-s<seed>`` (trained from scratch with that seed) or from ``init``.

Every evaluation writes tidy rows (:data:`robustsoup.evaluate.rows.METRIC_COLUMNS`, threat ``none``,
attack ``clean``): clean test accuracy (corruption ``none``) and accuracy on the corrupted test
split (``data/corrupted/test``: Hendrycks' arrays for a decoded split, ImageNet-C folders for a file
list, see :mod:`robustsoup.data.corrupted`) at ``rws.eval_severities``. Every evaluation streams its
images in batches, so a file-list split is decoded a batch at a time.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file as save_torch

from ..checkpoint import load_checkpoint, load_model
from ..data import ImageSplit, load_split
from ..data.corrupted import corrupted_split, split_head
from ..data.corruptions import corrupt
from ..data.scoring import split_scoring
from ..data.splits import Split
from ..device import resolve_channels_last, seed_everything
from ..evaluate.clean import batch_correct, clean_correct, labelled_batches, model_inputs
from ..evaluate.registry import make_evaluator
from ..evaluate.rows import METRIC_COLUMNS, MetricLog, read_metrics, write_metrics
from ..evaluate.rows import metric_row as tidy_row
from ..io import atomic_path, write_text_atomic
from ..lineage import CONFIG_ADVICE
from ..models.memory_format import computing_in
from ..progress import progress
from ..train.loop import BestEpoch
from ..train.policies import CleanInputs, CorruptionInputs
from ..train.run import model_identity, new_meta, settings_from, starting_model, train_and_checkpoint
from .bases import check_bases
from .config import (
    INIT,
    compose_name,
    compound_name,
    deploy_variant,
    lambda_name,
    quantized_variants,
    transfer_targets,
    variant_suffix,
    variants,
)
from .detector import ShallowFeatures, detector_probabilities, fit_detector, route_batches, tune_lambda
from .extract import extract_signature
from .layers import plan_layers
from .patching import patched, state_digest
from .quantize import quantize_signatures
from .signature_file import load_signature, save_signature
from .signatures import Signature

log = logging.getLogger(__name__)

EVALSET = "test"


# --------------------------------------------------------------------------- names and checks


# --------------------------------------------------------------------------- training


def _training_record(spec: Mapping, policy, seed: int, corruptions=(), severities=(), clean_fraction=0.0) -> dict:
    return {
        **spec,
        "policy": policy.name,
        "corruptions": list(corruptions),
        "severities": list(severities),
        "clean_fraction": clean_fraction,
        "seed": seed,
        # The fields the soup report reads (see report.tables.add_training_columns).
        "norms": [],
        "attack_steps": 0,
        "cost": spec["epochs"],
    }


def _train(
    config: Mapping,
    name: str,
    spec: Mapping,
    policy,
    record: dict,
    train_path,
    out_path,
    device,
    seed: int,
    init_path=None,
    best: BestEpoch | None = None,
) -> Path:
    """Train one RWS model of the run's architecture, from scratch or fine-tuned from ``init_path``
    (keeping the epoch ``best`` scores highest, when given)."""
    seed_everything(seed)
    meta = new_meta(model_identity(config), name, training=record)
    model, init_sha = starting_model(config, meta, init_path)
    settings = settings_from(spec, seed, decay_all=init_path is not None)
    data = load_split(train_path)
    return train_and_checkpoint(
        model, meta, data, policy, settings, out_path, device, spec["resume"], init_sha, best=best
    )


def train_rws_init(config: Mapping, name: str, train_path, out_path, device) -> Path:
    """Rule ``train_rws_init``: the shared initialization (``init``) or a transfer target's own (``init-s<seed>``)."""
    seed = config["seed"] if name == INIT else int(name.removeprefix("init-s"))
    spec = config["rws"]["init"]
    policy = CleanInputs()
    return _train(config, name, spec, policy, _training_record(spec, policy, seed), train_path, out_path, device, seed)


def train_rws_model(
    config: Mapping, name: str, init_path, train_path, out_path, device, best: BestEpoch | None = None
) -> Path:
    """Rules ``train_rws_model`` / ``train_expert``: ``standard``, ``augment``, ``expert-<c>`` or ``standard-s<seed>``.

    Every one is fine-tuned from ``init_path`` with ``rws.finetune``; what differs is the input policy
    (and, for experts, which epoch is kept: ``best``, see :func:`expert_selection`).
    """
    rws = config["rws"]
    spec, seed = rws["finetune"], config["seed"]
    severities = list(rws["severities"])
    if name == "standard":
        policy, extra = CleanInputs(), {}
    elif name in transfer_targets(config):
        seed = rws["transfer"]["seed"]
        policy, extra = CleanInputs(), {}
    elif name == "augment":
        fraction = rws["augment_clean_fraction"]
        policy = CorruptionInputs(list(rws["corruptions"]), severities, clean_fraction=fraction, seed=seed)
        extra = {"corruptions": rws["corruptions"], "severities": severities, "clean_fraction": fraction}
    elif name.startswith("expert-") and name.removeprefix("expert-") in rws["corruptions"]:
        corruption = name.removeprefix("expert-")
        policy = CorruptionInputs([corruption], severities, seed=seed)
        extra = {"corruptions": [corruption], "severities": severities}
    else:
        raise ValueError(
            f"unknown RWS model {name!r}; expected standard, augment, {list(transfer_targets(config))} "
            f"or expert-<c> for c in {rws['corruptions']}"
        )
    record = _training_record(spec, policy, seed, **extra)
    return _train(
        config, name, spec, policy, record, train_path, out_path, device, seed, init_path=init_path, best=best
    )


@dataclass
class CorruptedAccuracy:
    """Mean accuracy of a model over ``severities`` on the copies of a split (``split_path``) corrupted by
    ``corruption`` in ``corrupted_dir``: the score :func:`expert_selection` keeps an expert's epoch by. Plain
    data, so a data-parallel training can hand it to its ranks; each scores on its model's device."""

    config: Mapping
    split_path: str
    corrupted_dir: str
    corruption: str
    severities: list[int]
    _sets: EvalSets | None = field(default=None, init=False, repr=False, compare=False)

    def __call__(self, model) -> float:
        device = next(model.parameters()).device
        if self._sets is None:  # opened once, at the first epoch's end (after any pickling to the ranks)
            self._sets = EvalSets(self.config, self.split_path, self.corrupted_dir, split="adapt")
        correct = [clean_correct(model, self._sets.corrupted(self.corruption, s), device) for s in self.severities]
        return float(torch.cat(correct).float().mean())


def expert_selection(config: Mapping, corruption: str, adapt_path, validation_dir) -> BestEpoch | None:
    """How the expert of ``corruption`` picks its epoch: None (the last, ``rws.expert_selection: last``) or a
    :class:`BestEpoch` scoring :class:`CorruptedAccuracy` on the adapt split's copies in ``validation_dir`` at
    ``rws.severities`` (the reference scores corrupted validation images held out of the training set; the adapt
    split is this pipeline's held-out split, never the test split)."""
    rws = config["rws"]
    if rws["expert_selection"] == "last":
        return None
    if adapt_path is None or validation_dir is None:
        raise ValueError(
            "rws.expert_selection: best scores every epoch of an expert on the adapt split's corrupted copies, "
            f"but they were not given (adapt split: {adapt_path}, corrupted copies: {validation_dir}); "
            "run through the workflow, which writes them, or set rws.expert_selection: last"
        )
    severities = sorted(rws["severities"])
    score = CorruptedAccuracy(dict(config), str(adapt_path), str(validation_dir), corruption, severities)
    return BestEpoch(score, f"accuracy on the adapt split corrupted by {corruption} at severities {severities}")


def train_expert(
    config: Mapping, corruption: str, init_path, train_path, out_path, device, adapt_path=None, validation_dir=None
) -> Path:
    """Rule ``train_expert``: the expert of ``corruption``, fine-tuned from ``init_path`` on that corruption,
    keeping its best epoch on the corrupted adapt split (``validation_dir``) or its last
    (``rws.expert_selection``)."""
    best = expert_selection(config, corruption, adapt_path, validation_dir)
    return train_rws_model(config, f"expert-{corruption}", init_path, train_path, out_path, device, best=best)


# --------------------------------------------------------------------------- signatures


def extract_rws(
    config: Mapping,
    corruptions: Sequence[str],
    init_path,
    standard_path,
    expert_paths: Sequence,
    shallow_paths: Sequence,
    all_paths: Sequence,
) -> list[Path]:
    """Rule ``extract_rws``: each expert's float32 signature over the first k layers and over all layers.

    The init and standard checkpoints are read and the layer plans made once for all experts.
    """
    rws = config["rws"]
    identity = model_identity(config)
    shared, shared_sources = {}, {}
    for label, path in (("init", init_path), ("standard", standard_path)):
        state, meta = load_checkpoint(path, expect=identity)
        shared[label] = state
        shared_sources[label] = {"name": meta.name, "weights_sha256": meta.weights_sha256, "lineage": meta.lineage}
    ident = {**identity, "num_classes": meta.num_classes}
    plans = {
        suffix: plan_layers(shared["standard"], k, rws["norm_affine"], rws["statistics"], rws["layer_rule"])
        for k, suffix in ((rws["layers"], ""), (None, "-all"))
    }
    written = []
    for corruption, expert_path, shallow_path, all_path in zip(corruptions, expert_paths, shallow_paths, all_paths):
        expert, meta = load_checkpoint(expert_path, expect=identity)
        sources = {**shared_sources, "expert": {"name": meta.name, "weights_sha256": meta.weights_sha256}}
        for path, suffix in ((shallow_path, ""), (all_path, "-all")):
            plan = plans[suffix]
            signature = extract_signature(
                shared["init"],
                shared["standard"],
                expert,
                plan,
                name=f"rws-{corruption}{suffix}",
                corruption=corruption,
                identity=ident,
                sources=sources,
            )
            written.append(save_signature(path, signature))
            log.info(
                "%s: %d tensors over %d layers, %d parameters, %d bytes",
                signature.name,
                len(signature.values),
                len(plan.layers),
                signature.meta.parameters,
                signature.meta.file_bytes,
            )
    return written


def quantize_rws(
    config: Mapping, signature_paths: Mapping[str, str], out_paths: Mapping[str, Mapping[str, str]]
) -> list[Path]:
    """Rule ``quantize_rws``: every shallow signature quantized as each variant of
    :func:`~robustsoup.rws.config.quantized_variants` (``rws.levels``, ``rws.bits`` and their ranges).

    ``signature_paths`` maps each corruption to its float32 shallow signature, ``out_paths``
    each variant (``16levels``, ``8bit``, …) to {corruption: output path}. All signatures are
    quantized together, so that a range ``experts`` is [min, max] per key over all of them.
    """
    wanted = quantized_variants(config)
    unknown = [v for v in out_paths if v not in wanted]
    if unknown:
        raise ValueError(f"quantize_rws: variants {unknown} are not in this config's {list(wanted)}")
    identity = model_identity(config)
    corruptions = list(signature_paths)
    signatures = [
        load_signature(signature_paths[c], expect={"architecture": identity["architecture"]}) for c in corruptions
    ]
    written = []
    for variant, paths in out_paths.items():
        spec = wanted[variant]
        missing = [c for c in corruptions if c not in paths]
        if missing:
            raise ValueError(f"quantize_rws: no output path for {variant} of {missing}")
        quantized = quantize_signatures(
            signatures,
            bits=spec.get("bits"),
            levels=spec.get("levels"),
            value_range=spec["range"],
            names=[f"{s.name}-{variant}" for s in signatures],
        )
        for corruption, signature, original in zip(corruptions, quantized, signatures):
            written.append(save_signature(paths[corruption], signature))
            log.info("%s: %d bytes (float32: %d)", signature.name, signature.meta.file_bytes, original.meta.file_bytes)
    return written


# --------------------------------------------------------------------------- evaluation helpers


def metric_row(model: str, corruption: str, severity: int, correct: torch.Tensor) -> dict:
    return tidy_row(model, EVALSET, correct, corruption=corruption, severity=severity)


class EvalSets:
    """The clean split (its first ``n`` images) and its corrupted copies, as splits read in batches, and the
    memory format a model computes in on them (``channels_last``: ``evaluate.channels_last``)."""

    def __init__(self, config: Mapping, test_path, corrupted_dir, n: int | None = None, split: str = "test"):
        self.config = config
        self.channels_last = config["evaluate"]["channels_last"]
        self.whole = load_split(test_path)
        self.clean = split_head(self.whole, n)
        self.n = len(self.clean)
        self.y = self.clean.labels
        self.dir = Path(corrupted_dir)
        self.split = split
        self._opened: dict[tuple[str, int], Split] = {}

    def corrupted(self, corruption: str, severity: int) -> Split:
        """The first ``n`` corrupted copies at ``corruption`` and ``severity`` (labels checked against the split)."""
        key = (corruption, severity)
        if key not in self._opened:
            severities = self.config["data"]["severities"]
            copies = corrupted_split(self.dir, self.whole, corruption, severity, severities)
            self._opened[key] = split_head(copies, self.n)
        return self._opened[key]


def _rows(
    model, name: str, sets: EvalSets, corruptions: Sequence[str], severities: Sequence[int], device, clean: bool = True
) -> list[dict]:
    return _measure(MetricLog(), model, name, sets, corruptions, severities, device, clean).rows


def _measure(
    log: MetricLog, model, name: str, sets: EvalSets, corruptions, severities, device, clean: bool = True
) -> MetricLog:
    """:func:`_rows` into ``log``, with each row's per-point results (what the findings pair)."""
    if clean:
        clean = make_evaluator("clean", data=sets.clean, evalset=EVALSET, channels_last=sets.channels_last)
        clean.run(model, name, device, log)
    corrupted = make_evaluator(
        "corrupted",
        copies=sets.corrupted,
        corruptions=corruptions,
        severities=severities,
        evalset=EVALSET,
        desc=name,
        channels_last=sets.channels_last,
    )
    return corrupted.run(model, name, device, log)


def _write(rows: list[dict], path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=METRIC_COLUMNS)
    write_metrics(frame, path)
    return frame


def _load(config, path, device):
    seed_everything(config["seed"])
    model, meta = load_model(path, expect=model_identity(config), device=device)
    return model, meta


def _signatures(config, paths: Mapping[str, str]) -> dict[str, Signature]:
    identity = model_identity(config)
    return {
        c: load_signature(
            p, expect={"architecture": identity["architecture"], "model_kwargs": identity["model_kwargs"]}
        )
        for c, p in paths.items()
    }


# --------------------------------------------------------------------------- evaluation stages


def evaluate_rws_model(
    config: Mapping, name: str, model_path, test_path, corrupted_dir, rows_path, device, points_path=None
) -> pd.DataFrame:
    """Rule ``evaluate_rws_model``: a baseline's clean and corrupted accuracy (tidy rows, and with
    ``points_path`` their per-point results).

    ``standard`` and ``augment`` on every corruption; ``expert-<c>`` on its own corruption (the
    "All Models" oracle of Table 1).
    """
    model, _ = _load(config, model_path, device)
    rws = config["rws"]
    corruptions = [name.removeprefix("expert-")] if name.startswith("expert-") else rws["corruptions"]
    sets = EvalSets(config, test_path, corrupted_dir)
    measured = _measure(MetricLog(), model, name, sets, corruptions, rws["eval_severities"], device)
    return measured.write(rows_path, points_path)


def evaluate_patched(
    config: Mapping,
    variant: str,
    standard_path,
    signature_paths: Mapping[str, str],
    test_path,
    corrupted_dir,
    rows_path,
    device,
    points_path=None,
) -> pd.DataFrame:
    """Rule ``evaluate_patched``: the standard model patched with each corruption's signature (oracle, λ = rws.lambda).

    Rows ``rws-<c><suffix>``: on corruption c at every evaluation severity and on clean images
    with the patch on; ``rws-<c><suffix>-off``: clean accuracy after removing the patch, which
    first checks that the weights are the standard model's bit for bit (the job fails if not).
    """
    model, meta = _load(config, standard_path, device)
    identity = {"architecture": meta.architecture, "model_kwargs": meta.model_kwargs}
    reference = state_digest(model.state_dict())
    rws = config["rws"]
    sets = EvalSets(config, test_path, corrupted_dir)
    # After every unpatch the weights are checked to be the standard model's bit for bit,
    # so one clean pass gives every signature's "-off" row.
    unpatched = clean_correct(model, sets.clean, device, channels_last=sets.channels_last)
    measured = MetricLog()
    for corruption, signature in progress(_signatures(config, signature_paths).items(), "signatures"):
        name = f"rws-{corruption}{variant_suffix(variant)}"
        with patched(model, [signature], [rws["lambda"]], identity):
            _measure(measured, model, name, sets, [corruption], rws["eval_severities"], device)
        if state_digest(model.state_dict()) != reference:
            raise RuntimeError(f"removing {signature.name} did not restore the standard model bit for bit")
        measured.add(f"{name}-off", EVALSET, unpatched, sets.y)
    return measured.write(rows_path, points_path)


def rws_lambda_sweep(
    config: Mapping, standard_path, signature_paths: Mapping[str, str], test_path, corrupted_dir, rows_path, device
) -> pd.DataFrame:
    """Rule ``rws_lambda_sweep``: accuracy against λ at every evaluation severity (and clean), first ``sweep_images``."""
    model, meta = _load(config, standard_path, device)
    identity = {"architecture": meta.architecture, "model_kwargs": meta.model_kwargs}
    rws = config["rws"]
    sets = EvalSets(config, test_path, corrupted_dir, n=rws["sweep_images"])
    rows = []
    for corruption, signature in progress(_signatures(config, signature_paths).items(), "signatures"):
        for coefficient in rws["lambdas"]:
            with patched(model, [signature], [coefficient], identity):
                rows += _rows(
                    model, lambda_name(corruption, coefficient), sets, [corruption], rws["eval_severities"], device
                )
    return _write(rows, rows_path)


def rws_compose(
    config: Mapping, standard_path, signature_paths: Mapping[str, str], test_path, corrupted_dir, rows_path, device
) -> pd.DataFrame:
    """Rule ``rws_compose``: two signatures added together with λ₁, λ₂ on a grid.

    Evaluated on clean images, on each corruption alone and on the compound corruption (a then
    b applied to the same image, generated here), at ``rws.compose_severity``.
    """
    model, meta = _load(config, standard_path, device)
    identity = {"architecture": meta.architecture, "model_kwargs": meta.model_kwargs}
    rws = config["rws"]
    a, b = rws["compose"]
    severity = rws["compose_severity"]
    sets = EvalSets(config, test_path, corrupted_dir, n=rws["sweep_images"])
    signatures = _signatures(config, {c: signature_paths[c] for c in (a, b)})
    images = sets.clean.load(torch.arange(sets.n))  # rws.sweep_images of them, decoded once
    both = corrupt(corrupt(images, a, severity, seed=config["seed"]), b, severity, seed=config["seed"])
    streams = {
        "none": sets.clean,
        a: sets.corrupted(a, severity),
        b: sets.corrupted(b, severity),
        compound_name(a, b): ImageSplit(both, sets.y, sets.clean.dataset, f"{sets.split}:{compound_name(a, b)}"),
    }
    rows = []
    for la in progress(rws["compose_lambdas"], "rws_compose", unit="λ₁ values"):
        for lb in rws["compose_lambdas"]:
            name = compose_name(a, la, b, lb)
            with patched(model, [signatures[a], signatures[b]], [la, lb], identity):
                for corruption, data in streams.items():
                    rows.append(
                        metric_row(
                            name,
                            corruption,
                            0 if corruption == "none" else severity,
                            clean_correct(model, data, device, channels_last=sets.channels_last),
                        )
                    )
    return _write(rows, rows_path)


def rws_transfer(
    config: Mapping,
    target_paths: Sequence[str],
    signature_paths: Mapping[str, str],
    test_path,
    corrupted_dir,
    rows_path,
    device,
) -> pd.DataFrame:
    """Rule ``rws_transfer``: signatures extracted against ``standard`` patched onto other standard models.

    Per target: rows ``<target>`` (alone) and ``rws-<c>@<target>`` (patched, λ = rws.lambda).
    """
    rws = config["rws"]
    sets = EvalSets(config, test_path, corrupted_dir)
    signatures = _signatures(config, signature_paths)
    own_init = {name for name, init in transfer_targets(config).items() if init != INIT}
    rows = []
    for target_path in target_paths:
        model, meta = _load(config, target_path, device)
        # A target with its own initialization is unrelated on purpose: that row measures exactly that.
        allow = config["allow_unrelated"] or meta.name in own_init
        check_bases(meta, list(signatures.values()), allow, CONFIG_ADVICE, warn=log.warning)
        identity = {"architecture": meta.architecture, "model_kwargs": meta.model_kwargs}
        target = meta.name
        rows += _rows(model, target, sets, rws["corruptions"], rws["eval_severities"], device)
        for corruption, signature in signatures.items():
            with patched(model, [signature], [rws["lambda"]], identity):
                rows += _rows(model, f"rws-{corruption}@{target}", sets, [corruption], rws["eval_severities"], device)
    return _write(rows, rows_path)


# --------------------------------------------------------------------------- oracle-free mode


def rws_oracle_free(
    config: Mapping,
    standard_path,
    signature_paths: Mapping[str, str],
    adapt_path,
    adapt_corrupted_dir,
    test_path,
    corrupted_dir,
    rows_path,
    detector_path,
    classifier_path,
    device,
) -> pd.DataFrame:
    """Rule ``rws_oracle_free``: no oracle; a corruption-type classifier picks the signature and λ per batch.

    The classifier (multinomial logistic regression) sees per-channel means and standard
    deviations of the standard model's shallow-layer outputs (the signature's layers) and
    predicts "clean" or (corruption, severity); it is fitted on the adaptation split, clean and
    corrupted. λ per (corruption, severity) is the best of ``rws.lambdas`` on the adaptation
    split (ties → smaller λ). At test time every stream (clean, or one corruption at one
    severity) is cut into batches of ``oracle_free.batch_size``; the classifier's mean
    probability over a batch picks the class, hence the signature and λ, or no patch.

    Rows: ``rws-auto`` (oracle-free) and ``rws-oracle-tuned`` (true corruption and severity, the
    adaptation-tuned λ). ``detector_path``: per stream, how many batches the classifier got
    right (corruption; corruption and severity) and its per-image accuracy.
    """
    model, meta = _load(config, standard_path, device)
    identity = {"architecture": meta.architecture, "model_kwargs": meta.model_kwargs}
    rws, spec = config["rws"], config["rws"]["oracle_free"]
    signatures = _signatures(config, signature_paths)
    corruptions, severities = list(rws["corruptions"]), list(rws["eval_severities"])
    classes = [("none", 0)] + [(c, s) for c in corruptions for s in severities]
    layers = next(iter(signatures.values())).meta.layers
    features = ShallowFeatures(model, layers)
    adapt = EvalSets(config, adapt_path, adapt_corrupted_dir, split="adapt")
    test = EvalSets(config, test_path, corrupted_dir)

    def stream(sets: EvalSets, cls) -> Split:
        return sets.clean if cls[0] == "none" else sets.corrupted(*cls)

    def shallow(data: Split) -> torch.Tensor:
        return torch.cat([features(model_inputs(images)) for _, images, _, _ in labelled_batches(data, device)])

    x_fit = torch.cat([shallow(stream(adapt, cls)) for cls in classes])
    y_fit = torch.cat([torch.full((adapt.n,), i, dtype=torch.int64) for i in range(len(classes))])
    detector = fit_detector(x_fit, y_fit, len(classes), spec["weight_decay"], spec["steps"])
    with atomic_path(classifier_path) as tmp:
        save_torch(
            {k: v.float().contiguous() for k, v in detector.items()},
            str(tmp),
            metadata={"classes": json.dumps(classes), "layers": json.dumps(layers)},
        )

    best_lambda = {}
    for c, s in classes[1:]:
        data = adapt.corrupted(c, s)
        scores = []
        for coefficient in rws["lambdas"]:
            with patched(model, [signatures[c]], [coefficient], identity):
                scores.append(int(clean_correct(model, data, device, channels_last=adapt.channels_last).sum()))
        best_lambda[(c, s)] = tune_lambda(scores, rws["lambdas"])
        log.info("λ for %s severity %d on the adaptation split: %g", c, s, best_lambda[(c, s)])

    rows, detector_rows = [], []
    batch = spec["batch_size"]
    for truth in classes:
        data = stream(test, truth)
        auto, tuned = [], []
        right_type = right_both = batches = 0
        probabilities = detector_probabilities(detector, shallow(data))
        picks = route_batches(probabilities, batch, classes)
        scoring = split_scoring(data)
        # converted once a stream (then batch_correct's conversion is a no-op; a patch edits the converted tensors)
        with computing_in(model, resolve_channels_last(test.channels_last, device, model)):
            for picked, (_, images, labels, targets) in zip(picks, labelled_batches(data, device, batch), strict=True):
                batches += 1
                right_type += picked[0] == truth[0]
                right_both += picked == truth
                for chosen, sink in ((picked, auto), (truth, tuned)):
                    if chosen[0] == "none":
                        sink.append(batch_correct(model, images, labels, scoring, targets, test.channels_last).cpu())
                    else:
                        with patched(model, [signatures[chosen[0]]], [best_lambda[chosen]], identity):
                            sink.append(
                                batch_correct(model, images, labels, scoring, targets, test.channels_last).cpu()
                            )
        rows.append(metric_row("rws-auto", truth[0], truth[1], torch.cat(auto)))
        rows.append(metric_row("rws-oracle-tuned", truth[0], truth[1], torch.cat(tuned)))
        per_image = probabilities.argmax(1)
        image_type = sum(classes[int(i)][0] == truth[0] for i in per_image)
        detector_rows.append(
            {
                "corruption": truth[0],
                "severity": truth[1],
                "batch_size": batch,
                "batches": batches,
                "correct_corruption": right_type,
                "correct_both": right_both,
                "accuracy_corruption": right_type / batches,
                "accuracy_both": right_both / batches,
                "images": len(data),
                "image_accuracy_corruption": image_type / len(data),
                "lambda": 0.0 if truth[0] == "none" else best_lambda[truth],
            }
        )
    write_text_atomic(detector_path, pd.DataFrame(detector_rows).to_csv(sep="\t", index=False))
    return _write(rows, rows_path)


# --------------------------------------------------------------------------- gathering and report


def report_rws(
    config: Mapping,
    metric_paths: Sequence[str],
    gathered_path,
    detector_path,
    model_paths: Mapping[str, str],
    signature_paths: Mapping[str, Mapping[str, str]],
    classifier_path,
    tables: Mapping[str, str],
    figures: Mapping[str, str],
) -> list[Path]:
    """Rule ``report_rws``: every RWS metric file in one tidy table (``gathered_path``, i.e.
    ``metrics/rws.tsv``), then Table 1, Table 4, the oracle-free and transfer tables, and three figures."""
    from . import report

    metrics = read_metrics(list(metric_paths))
    write_metrics(metrics, gathered_path)
    detector = pd.read_csv(detector_path, sep="\t")
    return report.write_report(
        config, metrics, detector, model_paths, signature_paths, classifier_path, tables, figures
    )


__all__ = [
    "EvalSets",
    "ShallowFeatures",
    "deploy_variant",
    "detector_probabilities",
    "evaluate_patched",
    "evaluate_rws_model",
    "extract_rws",
    "fit_detector",
    "metric_row",
    "quantize_rws",
    "report_rws",
    "rws_compose",
    "rws_lambda_sweep",
    "rws_oracle_free",
    "rws_transfer",
    "train_rws_init",
    "train_rws_model",
    "transfer_targets",
    "variant_suffix",
    "variants",
]
