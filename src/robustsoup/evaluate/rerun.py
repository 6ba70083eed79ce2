"""The rerun keys of a model's evaluation (evaluate_model, or evaluate_model_shard and merge_model_shards).
Torch-free: the workflow reads them when it parses."""

from __future__ import annotations

from collections.abc import Mapping

from ..attacks.protocol import EVALUATION_PROTOCOL

# The rules of a model's evaluation, sharded or not, whose rerun keys :func:`evaluation_rerun_keys` declares.
EVALUATION_RULES = ("evaluate_model", "evaluate_model_shard", "merge_model_shards")


def evaluation_rerun_keys(config: Mapping, rule: str, wildcard: str | None, context: Mapping) -> dict:
    """The config keys a model's evaluation depends on (the ``rerun`` param of every rule in
    :data:`EVALUATION_RULES`; the shard count changes no number, so it is not one of them: evaluate_model_shard
    has it in its outputs' paths); ``context`` holds the seed."""
    spec = {k: v for k, v in config["evaluate"].items() if k != "shards"}
    return {"evaluate": spec, "threats": config["threats"], "seed": context["seed"], "protocol": EVALUATION_PROTOCOL}
