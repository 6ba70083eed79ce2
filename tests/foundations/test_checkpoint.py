import json
import os
import subprocess
import sys

import pytest
import torch

from robustsoup.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    save_checkpoint,
    sidecar_path,
)
from robustsoup.io import atomic_path
from robustsoup.state_dicts import load_foreign_state_dict

from conftest import tiny_meta


def test_round_trip_is_bit_exact_and_keeps_the_sidecar(tmp_path, tiny_model, random_images):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model.state_dict(), tiny_meta())
    state, meta = load_checkpoint(path)
    for key, tensor in tiny_model.state_dict().items():
        assert torch.equal(state[key], tensor), key
    assert meta.architecture == "preact_resnet_small" and meta.weights_sha256
    side = json.loads(sidecar_path(path).read_text())
    assert side["model_kwargs"] == {"width": 4, "activation": "relu"} and side["git_commit"]
    loaded, _ = load_model(path)
    x, _ = random_images
    with torch.no_grad():
        assert torch.equal(loaded(x), tiny_model(x))


def test_truncated_weights_are_caught(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model.state_dict(), tiny_meta())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"m\.safetensors.*truncated"):
        load_checkpoint(path)


def test_missing_files_name_what_was_expected(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.safetensors")
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model.state_dict(), tiny_meta())
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match=r"sidecar .*m\.json is missing"):
        load_checkpoint(path)


def test_checkpoint_of_another_architecture_is_refused(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.safetensors", tiny_model.state_dict(), tiny_meta())
    with pytest.raises(CheckpointError, match="expected architecture 'preact_resnet18', found 'preact_resnet_small'"):
        load_checkpoint(path, expect={"architecture": "preact_resnet18"})
    # A sidecar that lies about the width: the shapes give it away, with the key named.
    side = sidecar_path(path)
    meta = json.loads(side.read_text())
    meta["model_kwargs"]["width"] = 8
    side.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="another architecture: key 'net.conv1.weight' has shape"):
        load_model(path)


def test_foreign_pickles_load_tensors_only(tmp_path, tiny_model):
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tiny_model.state_dict().items()}}, plain)
    state = load_foreign_state_dict(plain)
    assert set(state) == set(tiny_model.state_dict())
    evil = tmp_path / "evil.pt"
    torch.save({"weights": tiny_meta()}, evil)  # an arbitrary object needs unpickling code
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_foreign_state_dict(evil)


def test_atomic_write_leaves_nothing_on_error(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert not target.exists() and list(tmp_path.iterdir()) == []


def test_killed_writer_leaves_no_file_that_looks_complete(tmp_path):
    target = tmp_path / "model.safetensors"
    code = (
        "import os, sys\n"
        "from robustsoup.io import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    tmp.write_bytes(b'x' * 1000)\n"
        "    os._exit(9)\n"  # dies like a SIGKILL: no cleanup runs
    )
    result = subprocess.run([sys.executable, "-c", code], env={**os.environ})
    assert result.returncode == 9
    assert not target.exists()
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert all(name.endswith(".partial") and name.startswith(".") for name in leftovers)


@pytest.mark.parametrize("made_by", ["workflow", "hand"])
def test_the_advice_for_a_damaged_checkpoint_fits_where_it_came_from(tmp_path, tiny_model, made_by):
    """A workflow artifact is remade by rerunning Snakemake; a file made by hand cannot be, so the
    advice differs (issue 14)."""
    folder = tmp_path / "results" / "digits" / "models" if made_by == "workflow" else tmp_path / "mine"
    path = save_checkpoint(folder / "m.safetensors", tiny_model.state_dict(), tiny_meta())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    if made_by == "workflow":
        assert "rerun Snakemake" in message and "not a workflow artifact" not in message
    else:
        assert "not a workflow artifact" in message and "rerun Snakemake" not in message
