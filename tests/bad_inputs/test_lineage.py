"""Lineage and content hashes (issue 26): what is accepted, with what warning, and what a sidecar records."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from bad_inputs.world import meta
from robustsoup.checkpoint import file_sha256, load_checkpoint, tensors_sha256
from robustsoup.cli import main
from robustsoup.lineage import CHECKPOINT, RANDOM_INIT, LineageError, descend, shared_ancestors
from robustsoup.rws.bases import check_bases
from robustsoup.rws.signature_file import load_signature

from conftest import finetuned_like as moved


def test_unrelated_soup_is_refused_and_with_the_flag_warns_naming_both_lineages(world, tmp_path, capsys):
    out = tmp_path / "soup.safetensors"
    args = ["soup", f"{world}/a.safetensors:0.5", f"{world}/stranger.safetensors:0.5", "-o", str(out)]
    assert main(args) == 2 and not out.exists()
    assert main([*args, "--allow-unrelated"]) == 0
    err = capsys.readouterr().err
    assert "a (" in err and "parent (" in err and "init (" in err  # a's lineage, up to its init checkpoint
    assert "stranger (" in err and "random init, seed 0" in err  # the stranger's, a fresh initialization
    written = load_checkpoint(out)[1]
    assert {r["name"] for r in written.lineage} >= {"a", "stranger", "parent", "init"}


def test_related_soup_records_its_ingredients_as_its_lineage(world, tmp_path):
    out = tmp_path / "soup.safetensors"
    assert main(["soup", f"{world}/a.safetensors:0.5", f"{world}/b.safetensors:0.5", "-o", str(out)]) == 0
    lineage = load_checkpoint(out)[1].lineage
    # ingredients, then their ancestors once each, down to the random initialization the family started from
    assert [r["name"] for r in lineage] == ["a", "b", "parent", "init", "preact_resnet_small init"]
    assert lineage[0]["weights_sha256"] == load_checkpoint(world / "a.safetensors")[1].weights_sha256


def test_patch_unpatch_patch_works_and_is_bit_for_bit(world, tmp_path):
    """Problem 5: the unpatched model is the standard model by content, so the signature applies again."""
    first, back, second = (tmp_path / f"{n}.safetensors" for n in ("first", "back", "second"))
    fog = f"{world}/fog.safetensors:0.8"
    assert main(["patch", f"{world}/a.safetensors", "--rws", fog, "-o", str(first)]) == 0
    assert main(["unpatch", str(first), "-o", str(back)]) == 0
    assert main(["patch", str(back), "--rws", fog, "-o", str(second)]) == 0
    a, restored = load_checkpoint(world / "a.safetensors"), load_checkpoint(back)
    assert restored[1].weights_sha256 == a[1].weights_sha256 and restored[1].lineage == a[1].lineage
    assert tensors_sha256(load_checkpoint(first)[0]) == tensors_sha256(load_checkpoint(second)[0])
    assert load_checkpoint(first)[1].lineage[0]["name"] == "a"


def test_identity_is_the_tensors_not_the_file_layout(world, tmp_path):
    path = tmp_path / "a.safetensors"
    shutil.copy(world / "a.json", path.with_suffix(".json"))
    tensors = load_file(str(world / "a.safetensors"))
    save_file(dict(reversed(list(tensors.items()))), str(path), metadata={"written": "by another tool"})
    assert file_sha256(path) != file_sha256(world / "a.safetensors")
    _, meta_ = load_checkpoint(path)
    assert meta_.weights_sha256 == load_checkpoint(world / "a.safetensors")[1].weights_sha256
    key = next(k for k, v in tensors.items() if v.is_floating_point())
    tensors[key] += 1e-3  # other tensors, same layout: refused
    save_file(tensors, str(path))
    with pytest.raises(Exception, match="does not match its sidecar"):
        load_checkpoint(path)


def test_a_sidecar_from_before_content_hashes_still_loads(world, tmp_path):
    path = tmp_path / "old.safetensors"
    shutil.copy(world / "a.safetensors", path)
    side = json.loads((world / "a.json").read_text())
    side.update(weights_sha256=file_sha256(path), lineage=[], parent="parent")
    side.pop("file_sha256")
    path.with_suffix(".json").write_text(json.dumps(side))
    loaded = load_checkpoint(path)[1]
    assert loaded.weights_sha256 == tensors_sha256(load_file(str(path))) and loaded.file_sha256 == file_sha256(path)
    # without lineage, names stand in: its recorded parent relates it to the parent's other children
    assert shared_ancestors([loaded, load_checkpoint(world / "b.safetensors")[1]])


def test_transfer_table_targets_the_shared_init_passes_and_the_own_init_needs_leave(world):
    """The project's transfer table: a signature moves to another standard model fine-tuned from the same
    init (allowed, with a warning), not to one with its own init (refused unless allowed)."""
    signature = load_signature(world / "fog.safetensors")
    parent_meta = load_checkpoint(world / "parent.safetensors")[1]
    shared = meta("standard-s1-shared")
    descend(shared, parent_meta)
    shared.weights_sha256 = "1" * 64
    said = []
    check_bases(shared, [signature], False, "set allow_unrelated", said.append)
    assert "share the ancestor(s)" in said[0] and "parent" in said[0]
    own_init = meta("init-s1")
    own_init.weights_sha256 = "2" * 64
    own_init.lineage = [{"name": "init", "weights_sha256": "3" * 64, "kind": RANDOM_INIT, "seed": 1}]
    own = meta("standard-s1-own")
    descend(own, own_init)
    own.weights_sha256 = "4" * 64
    with pytest.raises(LineageError, match="share no trained ancestor.*set allow_unrelated"):
        check_bases(own, [signature], False, "set allow_unrelated")
    said.clear()
    check_bases(own, [signature], True, "set allow_unrelated", said.append)
    assert "applying it anyway" in said[0] and "standard-s1-own" in said[0]


def test_training_records_its_lineage(tmp_path):
    from robustsoup.data import ImageSplit
    from robustsoup.train.loop import TrainSettings
    from robustsoup.train.policies import CleanInputs
    from robustsoup.train.run import starting_model, train_and_checkpoint

    torch.manual_seed(0)
    data = ImageSplit(torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8), torch.arange(16) % 10, "digits", "t")
    settings = TrainSettings(epochs=1, lr=0.01, batch_size=16, schedule="cosine", augmentation="none", seed=3)
    scratch = meta("scratch")
    model = scratch.build()
    init_digest = tensors_sha256(model.state_dict())
    train_and_checkpoint(model, scratch, data, CleanInputs(), settings, tmp_path / "scratch.safetensors", "cpu")
    root = load_checkpoint(tmp_path / "scratch.safetensors")[1].lineage
    assert root == [{"name": "preact_resnet_small init", "weights_sha256": init_digest, "kind": RANDOM_INIT, "seed": 3}]
    config = {"model": {"architecture": "preact_resnet_small", "width": 4, "activation": "relu"}, "dataset": "digits"}
    tuned = meta("tuned")
    model, _ = starting_model(config, tuned, tmp_path / "scratch.safetensors")
    assert tuned.parent == "scratch" and tuned.lineage[0]["kind"] == CHECKPOINT and tuned.lineage[1:] == root


def test_make_soup_with_allow_unrelated_logs_both_lineages(world, tmp_path, caplog):
    from robustsoup.run_config import resolve_config
    from robustsoup.soups.stages import make_soup

    config = resolve_config({"model": {"width": 4}, "soups": {"lines": []}, "allow_unrelated": True})
    paths = {"linf": str(world / "a.safetensors"), "linf-l2": str(world / "stranger.safetensors")}
    with caplog.at_level(logging.WARNING):
        make_soup(config, "mix", {"linf": 0.5, "linf-l2": 0.5}, paths, None, tmp_path / "mix.safetensors")
    assert "stranger" in caplog.text and "random init" in caplog.text and "mixing them anyway" in caplog.text
    assert (tmp_path / "mix.safetensors").exists()


def test_a_stranger_from_the_same_random_seed_is_not_a_relative(world):
    """Same architecture, same seed, trained apart: the shared random start is no common ancestor."""
    a, stranger = (load_checkpoint(world / f"{n}.safetensors")[1] for n in ("a", "stranger"))
    init = load_checkpoint(world / "init.safetensors")[1]
    assert stranger.lineage[0]["weights_sha256"] == init.weights_sha256  # bit-identical starting weights
    assert not shared_ancestors([a, stranger])
    b = moved(load_checkpoint(world / "b.safetensors")[0], 1)
    child = meta("c")
    descend(child, load_checkpoint(world / "b.safetensors")[1])
    child.weights_sha256 = tensors_sha256(b)
    assert set(shared_ancestors([a, child]).values()) == {"parent", "init"}


def test_a_model_from_a_weights_file_has_the_file_as_its_root(world, tmp_path):
    """model.weights: the lineage's root is the file (its SHA-256 and the loaded tensors'), so two trainings
    from one pretrained file are relatives."""
    from robustsoup.run_config import resolve_config
    from robustsoup.train.run import initial_model

    weights = tmp_path / "pretrained.safetensors"
    save_file(load_file(str(world / "a.safetensors")), str(weights))
    config = resolve_config({"model": {"width": 4, "weights": str(weights)}})
    first, second = meta("one"), meta("two")
    model = initial_model(config, first)
    initial_model(config, second)
    root = first.lineage[0]
    assert root["kind"] == "pretrained" and root["file"] == str(weights) and root["file_sha256"] == file_sha256(weights)
    assert root["weights_sha256"] == tensors_sha256(model.state_dict())
    first.weights_sha256, second.weights_sha256 = "5" * 64, "6" * 64
    assert set(shared_ancestors([first, second]).values()) == {str(weights)}
