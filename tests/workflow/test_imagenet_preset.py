"""The ImageNet preset plans all four studies on all eight evaluation sets (a dry run on fixture roots)."""

from __future__ import annotations

import subprocess

import yaml

from robustsoup.data.corruptions import STANDARD_CORRUPTIONS

from conftest import REPO
from data_fixtures import (
    imagenet_sample,
    subset_sample,
    write_cue_conflict,
    write_imagenet_c_folders,
    write_imagenet_real,
    write_wnid_folders,
)
from snakemake_output import job_stats, snakemake_command

EIGHT_SETS = {
    "imagenet-real",
    "imagenet-v2",
    "imagenet-a",
    "imagenet-r",
    "imagenet-sketch",
    "cue-conflict",
    "imagenet-c",
}


def _preset_on_fixtures(tmp_path):
    """config/presets/imagenet.yaml with every root, zoo file and weights file replaced by a generated one."""
    preset = yaml.safe_load((REPO / "config" / "presets" / "imagenet.yaml").read_text())
    wnids = imagenet_sample(3)
    root = tmp_path / "imagenet"
    write_wnid_folders(root / "train", wnids, per_class=2)
    write_imagenet_real(root, [[0], [], [1, 2]], wnids)
    shifts = {
        "imagenet-real": root,
        "imagenet-v2": tmp_path / "v2",
        "imagenet-a": tmp_path / "a",
        "imagenet-r": tmp_path / "r",
        "imagenet-sketch": tmp_path / "sketch",
        "cue-conflict": tmp_path / "cue",
        "imagenet-c": tmp_path / "c",
    }
    write_wnid_folders(shifts["imagenet-v2"], ["0", "1", "2"], per_class=1)
    write_wnid_folders(shifts["imagenet-a"], subset_sample("imagenet-a"), per_class=1)
    write_wnid_folders(shifts["imagenet-r"], subset_sample("imagenet-r"), per_class=1)
    write_wnid_folders(shifts["imagenet-sketch"], wnids, per_class=1)
    write_cue_conflict(shifts["cue-conflict"], per_category=1)
    write_imagenet_c_folders(shifts["imagenet-c"], wnids, list(STANDARD_CORRUPTIONS), per_class=1, res=32)
    zoo = tmp_path / "models" / "imagenet" / "Linf" / "Salman2020Do_R50.pt"
    zoo.parent.mkdir(parents=True)
    zoo.write_bytes(b"")
    preset["data"]["root"] = str(root)
    preset["data"]["shifts"] = {name: str(path) for name, path in shifts.items()}
    preset["model"]["model_dir"] = str(tmp_path / "models")
    for model in ("teacher", "student"):
        weights = tmp_path / f"{model}.safetensors"
        weights.write_bytes(b"")
        preset["distill"][model]["weights"] = str(weights)
    config = tmp_path / "imagenet.yaml"
    config.write_text(yaml.safe_dump(preset))
    return preset, config


def test_the_imagenet_preset_plans_every_study_on_every_set(tmp_path):
    preset, config = _preset_on_fixtures(tmp_path)
    assert set(preset["data"]["shifts"]) == EIGHT_SETS  # with ImageNet itself, the soups paper's eight
    run = subprocess.run(
        snakemake_command(tmp_path, config, "--dry-run", "--cores", "1", "--resources", "gpu=4"),
        capture_output=True,
        text=True,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-3000:]
    jobs = job_stats(output)
    assert "skipped" not in output
    # Robust fine-tuning and its soups, soups per shift, RWS and distillation: every study's rules are planned.
    for rule in ("pretrain", "finetune", "make_soup", "evaluate_model", "report_lp"):
        assert jobs.get(rule), rule
    for rule in ("select_soups", "evaluate_soups_shifts", "report_soups"):
        assert jobs.get(rule) == 1, rule
    for rule in ("train_expert", "extract_rws", "evaluate_patched", "report_rws"):
        assert jobs.get(rule), rule
    for rule in ("train_teacher", "distill_student", "evaluate_distilled", "report_distill"):
        assert jobs.get(rule), rule
    assert jobs["train_expert"] == len(preset["rws"]["corruptions"])
    # Every shift is split (file lists), and IN-C stands in for generated corrupted copies.
    assert jobs["prepare_shift"] == len(EIGHT_SETS)
    assert "corrupt_split" not in jobs
    for shift in EIGHT_SETS:
        assert f"results/imagenet/data/{shift}" in output, shift
