"""Stage functions outside the workflow: pretrained parents, bad inputs that write nothing."""

import pytest
import torch
from safetensors.torch import save_file

from robustsoup.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from robustsoup.data import prepare_splits
from robustsoup.lp.stages import finetune, pretrain
from robustsoup.run_config import resolve_config
from robustsoup.train.loop import TrainingDivergedError

from conftest import tiny_meta


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return prepare_splits("digits", tmp_path_factory.mktemp("data"), n_adapt=20, n_test=40, seed=0)


def _config(**model):
    return resolve_config(
        {
            "device": "cpu",
            "model": {"width": 4, **model},
            "pretrain": {"epochs": 1, "lr": 1e-12, "batch_size": 512, "attack_steps": 1},
            "finetune": {"l2": {"norm": "L2", "epochs": 1, "batch_size": 512, "attack_steps": 1}},
            "soups": {"lines": [["linf", "linf-l2"]], "ensembles": [], "ternary": {"enabled": False}},
        }
    )


def test_a_parent_can_start_from_a_local_weights_file(tmp_path, splits):
    torch.manual_seed(123)
    start = tiny_meta(width=4).build().state_dict()
    weights = tmp_path / "start.safetensors"
    save_file({k: v.contiguous() for k, v in start.items()}, str(weights))
    out = tmp_path / "linf.safetensors"
    pretrain(_config(weights=str(weights)), splits["train"], out, torch.device("cpu"))
    state, meta = load_checkpoint(out)
    assert meta.provenance["initial_weights"] == str(weights)
    # lr 1e-12: the parent is the file's weights (BN statistics moved by one epoch of batches)
    assert torch.allclose(state["net.conv1.weight"], start["net.conv1.weight"], atol=1e-9)


def test_a_parent_of_another_architecture_stops_the_finetune_and_writes_nothing(tmp_path, splits):
    torch.manual_seed(0)
    other = tiny_meta(width=8)
    parent = tmp_path / "linf.safetensors"
    save_checkpoint(parent, other.build().state_dict(), other)
    out = tmp_path / "linf-l2.safetensors"
    with pytest.raises(CheckpointError, match="expected model_kwargs"):
        finetune(_config(), "l2", parent, splits["train"], out, torch.device("cpu"))
    assert not out.exists()


def test_a_diverging_parent_writes_no_checkpoint(tmp_path, splits):
    config = _config()
    config["pretrain"]["lr"] = 1e30
    config["pretrain"]["momentum"] = 0.0
    out = tmp_path / "linf.safetensors"
    with pytest.raises(TrainingDivergedError):
        pretrain(config, splits["train"], out, torch.device("cpu"))
    assert not out.exists() and not out.with_suffix(".json").exists()
