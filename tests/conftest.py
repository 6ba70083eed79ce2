"""Shared fixtures: tiny models and data the tests make themselves."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from robustsoup.checkpoint import CheckpointMeta

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _one_thread_for_session_fixtures():
    """Session fixtures (a trained model, the digits splits) are made before any function-scoped fixture,
    so they need the one thread set here too: their numbers would otherwise depend on which test ran first."""
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _environment_restored():
    """Every test leaves os.environ as it found it: code under test that sets a process group's or a lease's
    variables in place (RANK, WORLD_SIZE, CUDA_VISIBLE_DEVICES, ROBUSTSOUP_RANK_CPUS …) would otherwise leak
    them into later tests and into the Snakemake runs they start (a leaked WORLD_SIZE=2 fails every
    training of gpus: 1)."""
    saved = dict(os.environ)
    yield
    if os.environ != saved:
        os.environ.clear()
        os.environ.update(saved)


# The lineage record of a parent checkpoint that tiny_meta(family=True) models were fine-tuned from.
FAMILY_PARENT = {"name": "parent", "weights_sha256": "ab" * 32, "kind": "checkpoint"}


def tiny_meta(name: str = "tiny", width: int = 4, family: bool = False) -> CheckpointMeta:
    """A small model's sidecar; ``family``: one of a soup family (all fine-tuned from FAMILY_PARENT)."""
    return CheckpointMeta(
        name=name,
        architecture="preact_resnet_small",
        model_kwargs={"width": width, "activation": "relu"},
        dataset="digits",
        num_classes=10,
        mean=[0.3, 0.3, 0.3],
        std=[0.3, 0.3, 0.3],
        parent="parent" if family else None,
        lineage=[dict(FAMILY_PARENT)] if family else [],
    )


def finetuned_like(state, seed, scale=0.05):
    """A copy of ``state`` moved like a fine-tune: weights, BN affine and statistics."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in state.items():
        if not torch.is_floating_point(value):
            out[key] = value.clone()
        elif key.endswith("running_var"):
            out[key] = value * torch.exp(scale * torch.randn(value.shape, generator=generator))
        else:
            out[key] = value + scale * torch.randn(value.shape, generator=generator)
    return out


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """The bad-input corpus's files (tests/bad_inputs/world.py), made once per session."""
    from bad_inputs.world import build_world

    return build_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def tiny_model():
    torch.manual_seed(0)
    return tiny_meta().build().eval()


@pytest.fixture(scope="session")
def digits_splits(tmp_path_factory):
    """The embedded data set, split once per test session."""
    from robustsoup.data import load_split, prepare_splits

    paths = prepare_splits("digits", tmp_path_factory.mktemp("digits"), n_adapt=100, n_test=200, seed=0)
    return {name: load_split(path) for name, path in paths.items()}


@pytest.fixture(scope="session")
def trained_model(digits_splits):
    """A width-8 model trained cleanly on digits for 3 epochs (~95% test accuracy, seconds)."""
    from robustsoup.train.loop import TrainSettings, train_model
    from robustsoup.train.policies import CleanInputs

    torch.manual_seed(0)
    model = tiny_meta(width=8).build()
    train_model(
        model,
        digits_splits["train"],
        CleanInputs(),
        TrainSettings(epochs=3, lr=0.1, batch_size=32, schedule="cosine"),
        torch.device("cpu"),
    )
    return model.eval()


@pytest.fixture
def random_images():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (6,), generator=generator)
    return x, y


__all__ = ["REPO", "tiny_meta"]
