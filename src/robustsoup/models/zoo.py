"""Pretrained weights, offline first: RobustBench's model zoo and local weight files.

``robustbench:<name>`` is a RobustBench model-zoo entry. Its weights are read
from ``{model_dir}/{dataset}/{threat}/{name}.pt`` — the layout RobustBench's
own ``load_model`` caches to — and nothing else: when that file is missing,
:func:`load_zoo_model` fails at once with the path it expected and how to
get the file, before RobustBench is even imported. Building the architecture
and loading the weights run with the network switched off
(:func:`network_forbidden`), so a zoo entry that would download something
(timm-hosted weights, torchvision's pretrained ImageNet models) fails
instead of reaching the network.

RobustBench 1.1.1's package ``__init__`` imports ``robustbench.eval``, which
imports ``autoattack`` and ``autoattack.state``: AutoAttack's name on GitHub,
which on PyPI is the package ``pyautoattack``. So every ``robustbench``
import (the zoo tables, the architectures) needs an alias the first time;
:func:`autoattack_alias` maps the one name onto the other for the length of
that import only. RobustBench also needs ``setuptools<81`` (``pkg_resources``).

Local weights files (``model.weights``) load into any registry
architecture: timm's ImageNet weights, and robust-finetuning's PreAct
ResNet-18 checkpoints (their published ``pretr_Linf.pth``/``pretr_L2.pth``/
``pretr_L1.pth`` or a ``ep_<n>.pth`` of their train.py, bare or as
``{'state_dict': …, 'optim': …}``) into ``preact_resnet18_rf``, whose module
names are theirs, so no key map is needed. A file that does not fit fails
with the keys or shapes expected and found, and what to set.

Third-party files are read with ``torch.load(weights_only=True)`` only.
RobustBench models take [0,1] pixels and normalize inside, so they are
wrapped with identity statistics.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import socket
import sys
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..state_dicts import CheckpointError, load_foreign_state_dict, load_state_dict_checked
from .preact_resnet import PreActResNet
from .registry import (
    FIXED_INPUT_STATISTICS,
    IDENTITY_STATISTICS,
    PREFIX_BUILDERS,
    ZOO_PREFIX,
    Normalized,
    _build_model,
)

ZOO_DATASETS = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
ZOO_THREATS = ("Linf", "L2", "corruptions")
FIXED_INPUT_STATISTICS[ZOO_PREFIX] = lambda: IDENTITY_STATISTICS


class ZooError(ValueError):
    """A zoo model or weights file that is missing, unknown or not loadable offline."""


class NetworkForbidden(ZooError):
    """Something tried to open a network connection while robustsoup loads a model."""


# ---------------------------------------------------------------------------
# No network


@contextlib.contextmanager
def network_forbidden(what: str = "loading a model") -> Iterator[None]:
    """Within the block, any attempt to resolve a host or open a connection raises :class:`NetworkForbidden`."""

    def refuse(*args, **kwargs):
        target = args[1] if len(args) > 1 else (args[0] if args else kwargs)
        raise NetworkForbidden(
            f"robustsoup never reaches the network at run time, but {what} tried to connect to {target!r}; "
            "the weights must be on disk beforehand (see robustsoup.models.zoo)"
        )

    saved = (socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo)
    socket.socket.connect = refuse
    socket.socket.connect_ex = refuse
    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex, socket.create_connection, socket.getaddrinfo = saved


# ---------------------------------------------------------------------------
# The autoattack → pyautoattack alias


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports ``autoattack[.x]`` as the already-installed ``pyautoattack[.x]``."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname == "autoattack" or fullname.startswith("autoattack."):
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        return importlib.import_module("py" + spec.name)

    def exec_module(self, module) -> None:  # the real module is already executed
        return None


def _aliased() -> set[str]:
    return {name for name in sys.modules if name == "autoattack" or name.startswith("autoattack.")}


@contextlib.contextmanager
def autoattack_alias() -> Iterator[None]:
    """Within the block, ``import autoattack[.x]`` loads the installed ``pyautoattack[.x]``; import RobustBench
    inside it. On exit the finder and the ``autoattack`` names it added to ``sys.modules`` are gone again
    (RobustBench keeps the objects it bound), so nothing outside the block sees the alias."""
    if importlib.util.find_spec("pyautoattack") is None:
        raise ZooError("RobustBench models need pyautoattack (pip install pyautoattack==0.2.0)")
    before, finder = _aliased(), _AliasFinder()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in _aliased() - before:
            del sys.modules[name]


def _robustbench():
    """RobustBench's zoo tables and enums (imported under the alias)."""
    try:
        with (
            autoattack_alias(),
            warnings.catch_warnings(),
        ):  # RobustBench's imports warn about pkg_resources and timm paths
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", FutureWarning)
            from robustbench.model_zoo import model_dicts
            from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel
    except ImportError as exc:
        raise ZooError(
            f"robustbench:<name> models need RobustBench ({exc}); install robustbench==1.1.1 with setuptools<81"
        ) from exc
    return model_dicts, BenchmarkDataset, ThreatModel


# ---------------------------------------------------------------------------
# RobustBench


def zoo_weights_path(name: str, dataset: str, threat: str, model_dir: str | Path) -> Path:
    """``{model_dir}/{dataset}/{threat}/{name}.pt``: where RobustBench keeps a zoo model's weights."""
    return Path(model_dir) / dataset / threat / f"{name}.pt"


def _check_zoo_names(dataset: str, threat: str) -> None:
    if dataset not in ZOO_DATASETS:
        raise ZooError(f"RobustBench has models for {sorted(ZOO_DATASETS)}, not {dataset!r}")
    if threat not in ZOO_THREATS:
        raise ZooError(f"RobustBench threat models are {list(ZOO_THREATS)}, not {threat!r}")


def require_zoo_weights(name: str, dataset: str, threat: str, model_dir: str | Path) -> Path:
    """The weights file of zoo model ``name``, or :class:`ZooError` saying where it was expected."""
    _check_zoo_names(dataset, threat)
    path = zoo_weights_path(name, dataset, threat, model_dir)
    if not path.is_file():
        raise ZooError(
            f"RobustBench model {name!r} ({dataset}, {threat}): weights file {path} not found "
            f"(expected layout {{model_dir}}/{{dataset}}/{{threat}}/{{name}}.pt with model_dir={model_dir}). "
            "robustsoup never downloads at run time: on a machine with network run\n"
            f"    python -c \"from robustbench.utils import load_model; load_model('{name}', "
            f"model_dir='models', dataset='{dataset}', threat_model='{threat}')\"\n"
            f"and copy models/{dataset}/{threat}/{name}.pt to {path}."
        )
    return path


def build_zoo_architecture(
    name: str, num_classes: int | None = None, dataset: str | None = None, threat: str = "Linf", **_ignored
) -> nn.Module:
    """The architecture of zoo entry ``name`` with random weights, built with the network off.

    ``dataset`` defaults to the one with ``num_classes`` classes (10 → cifar10,
    100 → cifar100, 1000 → imagenet). Other keyword arguments (``width``,
    ``activation`` from a run's config) do not apply and are ignored.
    """
    if dataset is None:
        by_classes = {n: d for d, n in ZOO_DATASETS.items()}
        if num_classes not in by_classes:
            raise ZooError(f"cannot tell the RobustBench data set of a {num_classes}-class model; pass dataset=")
        dataset = by_classes[num_classes]
    _check_zoo_names(dataset, threat)
    model_dicts, BenchmarkDataset, ThreatModel = _robustbench()
    entries = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]
    if name not in entries:
        close = [n for n in entries if name.lower()[:6] in n.lower()][:5] or list(entries)[:5]
        raise ZooError(f"RobustBench has no {dataset} {threat} model {name!r}; e.g. {close}")
    entry = entries[name]
    if isinstance(entry.get("gdrive_id"), list):
        raise ZooError(f"RobustBench model {name!r} is an ensemble of several files; robustsoup loads single models")
    with network_forbidden(f"building RobustBench model {name}"):
        net = entry["model"]()
    if num_classes is not None and num_classes != ZOO_DATASETS[dataset]:
        raise ZooError(f"RobustBench {dataset} models have {ZOO_DATASETS[dataset]} classes, asked for {num_classes}")
    return net


PREFIX_BUILDERS[ZOO_PREFIX] = build_zoo_architecture


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a third-party ``.pt``/``.pth`` or ``.safetensors`` file (see
    :func:`robustsoup.state_dicts.load_foreign_state_dict`); a missing file is a :class:`ZooError`."""
    path = Path(path)
    if not path.is_file():
        where = "" if path.is_absolute() else f" (looked at {path.absolute()})"
        raise ZooError(
            f"weights file {path} not found{where}; expected a .safetensors file or a "
            ".pt/.pth state dict there. robustsoup never downloads: copy the file to that path, or point "
            "model.weights at it (absolute, or relative to the directory the workflow runs in)"
        )
    return load_foreign_state_dict(path)


def match_state_dict(
    net: nn.Module, state: Mapping[str, torch.Tensor], prefixes: Sequence[str] = ("model.", "net.")
) -> dict[str, torch.Tensor]:
    """``state`` with its keys matched to ``net``'s: as is, or with one of ``prefixes`` dropped or added."""
    own = set(net.state_dict())
    candidates = [dict(state)]
    for prefix in prefixes:
        candidates.append({k.removeprefix(prefix): v for k, v in state.items()})
        candidates.append({prefix + k: v for k, v in state.items()})
    for candidate in candidates:
        if set(candidate) == own:
            return candidate
    return dict(state)  # let the checked load name the mismatch


def _is_reference_preact(keys: Iterable[str]) -> bool:
    """Whether state-dict ``keys`` have robust-finetuning's PreAct ResNet layout (``layer1.0.bn1``, ``linear``)."""
    keys = set(keys)
    return {"conv1.weight", "bn.weight", "linear.weight", "layer1.0.bn1.weight"} <= keys


def weights_hint(net: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """What to do when ``state`` does not load into ``net``: the architecture or width the file fits, if known."""
    reference = isinstance(net, PreActResNet) and "layer1" in net.stage_names
    if _is_reference_preact(state) and not reference:
        return (
            "the file has robust-finetuning's PreAct ResNet layout (layer1 … layer4, shortcut.0): "
            "set model.architecture: preact_resnet18_rf"
        )
    if not isinstance(net, PreActResNet):
        return (
            "set model.architecture (and model.width) to the network the file was saved from, "
            "or give a weights file of this architecture"
        )
    if reference and not _is_reference_preact(state):
        return (
            "preact_resnet18_rf loads robust-finetuning's PreAct ResNet-18 state dicts as their train.py saves "
            "them (conv1.weight, layer1.0.bn1.weight … layer4.1.conv2.weight, layer2.0.shortcut.0.weight, bn.*, "
            "linear.*; bare or as {'state_dict': …}); this file is not one"
        )
    conv1, linear = state.get("conv1.weight"), state.get("linear.weight")
    if conv1 is not None and linear is not None and conv1.dim() == 4 and linear.dim() == 2:
        found, built = (conv1.shape[0], linear.shape[0]), (net.conv1.out_channels, net.linear.out_features)
        if found != built:
            return (
                f"the file's network has width {found[0]} and {found[1]} classes, the model built here "
                f"width {built[0]} and {built[1]} classes: set model.width to the file's, and use the data "
                "set it was trained on"
            )
    return "the file is not a state dict of this architecture; give weights saved from the same network"


def load_weights_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` strictly into ``model`` (the network inside a ``Normalized`` wrapper).

    Missing or unexpected keys and shape mismatches raise
    :class:`~robustsoup.state_dicts.CheckpointError` naming what was expected and found, and what to do.
    """
    net = model.net if isinstance(model, Normalized) else model
    matched = match_state_dict(net, state)
    try:
        load_state_dict_checked(net, matched, source=source)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}; {weights_hint(net, matched)}") from exc
    return model


def load_zoo_model(
    name: str, dataset: str, threat: str = "Linf", model_dir: str | Path = "models", device: str | torch.device = "cpu"
) -> Normalized:
    """RobustBench model ``name`` with its weights from ``{model_dir}/{dataset}/{threat}/{name}.pt``.

    Fails at once, naming that path, if the file is missing; never downloads.
    The model takes [0,1] pixels (it normalizes inside) and is in eval mode.
    """
    path = require_zoo_weights(name, dataset, threat, model_dir)
    model = _build_model(ZOO_PREFIX + name, ZOO_DATASETS[dataset], *IDENTITY_STATISTICS, dataset=dataset, threat=threat)
    with network_forbidden(f"loading RobustBench model {name}"):
        load_weights_into(model, read_state_dict(path), source=str(path))
    return model.to(device).eval()


def load_weights_file(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a local weights file (``.safetensors``, or ``.pt``/``.pth`` via ``weights_only=True``) into ``model``.

    For timm models this is how ImageNet weights arrive: e.g. timm's
    ``model.safetensors`` for resnet50 copied from a machine with network.
    """
    return load_weights_into(model, read_state_dict(path), source=str(path))
