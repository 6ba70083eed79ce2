"""The one model factory: :func:`create_model`, in the spirit of timm's ``create_model(name, pretrained=…)``.

A name is a registry architecture (``preact_resnet_small``, ``wrn28_10``, ``resnet50`` …), a RobustBench
zoo entry (``robustbench:<name>``), or a library's model (``timm:<name>``, ``torchvision:<name>``); the
model is wrapped with its input normalization (:class:`~.registry.Normalized`, inputs in [0,1]). Its
weights are a fresh initialization, the zoo entry's own file (``pretrained=True``) or a local weights file
(``weights``). Every model robustsoup makes comes from here: a checkpoint's sidecar builds its model through
it (:meth:`robustsoup.checkpoint.CheckpointMeta.build`, which then loads the checked weights), and a
training's starting model (:func:`robustsoup.train.run.starting_model`) too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .named import load_with_new_head, split_name
from .registry import ZOO_PREFIX, Normalized, _build_model
from .zoo import ZOO_DATASETS, load_weights_file, load_weights_into, load_zoo_model, read_state_dict


def create_model(
    name: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    model_dir: str | Path = "models",
    dataset: str | None = None,
    threat: str = "Linf",
    provenance: dict | None = None,
    **kwargs,
) -> Normalized:
    """The model ``name`` for ``num_classes`` classes, normalizing its input with ``mean`` / ``std`` (or the
    architecture's own statistics, :func:`~.registry.input_statistics`).

    Weights: with ``weights`` (a ``.safetensors`` or ``.pt``/``.pth`` file) those, loaded strictly (for
    ``timm:<name>`` / ``torchvision:<name>`` a file whose classifier has another class count loads without
    it: a new head, logged and recorded in ``provenance["head_replaced"]``); else with ``pretrained`` the
    zoo entry's own file, ``{model_dir}/{dataset}/{threat}/{name}.pt`` (``robustbench:`` names only; the
    data set defaults to the one with ``num_classes`` classes); else a fresh initialization.
    ``kwargs`` are the architecture's (``width``, ``activation``, the multi-head student's …); a zoo entry
    ignores them.
    """
    zoo = name.startswith(ZOO_PREFIX)
    if pretrained and not zoo and not weights:
        raise ValueError(
            f"{name} has no pretrained weights of its own (only {ZOO_PREFIX}<name> entries do); "
            "give a weights file (weights=<path>) or build it freshly (pretrained=False)"
        )
    if zoo and pretrained and not weights:
        if dataset is None:
            dataset = {n: d for d, n in ZOO_DATASETS.items()}.get(num_classes, f"<{num_classes}-class data set>")
        return load_zoo_model(name[len(ZOO_PREFIX) :], dataset, threat, model_dir)
    if zoo:
        model = _build_model(name, num_classes, mean, std, dataset=dataset, threat=threat)
    else:
        model = _build_model(name, num_classes, mean, std, **kwargs)
    if weights and split_name(name) is not None:  # timm / torchvision: a new head for new classes
        state, replaced = load_with_new_head(model.net, read_state_dict(weights), str(weights))
        load_weights_into(model, state, source=str(weights))
        if replaced is not None and provenance is not None:
            provenance["head_replaced"] = replaced
    elif weights:
        load_weights_file(model, weights)
    return model


__all__ = ["create_model"]
