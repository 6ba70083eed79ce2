"""A configured shift data set (data.shifts) reaches the soups: on a CIFAR-10 run with CIFAR-10-C, select_soups
and evaluate_soups_shifts wait for prepare_shift and are handed every part's split (a Snakemake dry run)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from data_fixtures import write_cifar_binaries, write_hendrycks_npy
from snakemake_output import job_stats, snakemake_command

pytestmark = pytest.mark.workflow


def _cifar10_c_config(root: Path) -> Path:
    write_cifar_binaries(root / "cifar10", per_batch=6, test_size=40)
    write_hendrycks_npy(root / "cifar10-c", ["fog", "contrast"], n=8, num_classes=4)
    config = yaml.safe_load((REPO / "tests" / "configs" / "micro.yaml").read_text())
    config["dataset"] = "cifar10"
    config["data"] = {
        "root": str(root / "cifar10"),
        "k_adapt_per_class": 1,
        "corruptions": ["fog", "contrast"],
        "severities": [3],
        "shifts": {"cifar10-c": str(root / "cifar10-c")},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_soup_rules_depend_on_prepare_shift_and_read_every_part(tmp_path):
    config = _cifar10_c_config(tmp_path)
    workdir = tmp_path / "run"
    dry = subprocess.run(
        snakemake_command(workdir, config, "--cores", "1", "--dry-run", "--printshellcmds"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert dry.returncode == 0, dry.stderr[-3000:]
    jobs = job_stats(dry.stdout)
    assert jobs["prepare_shift"] == 1 and jobs["select_soups"] == 1 and jobs["evaluate_soups_shifts"] == 1
    graph = subprocess.run(
        snakemake_command(workdir, config, "--rulegraph"), capture_output=True, text=True, timeout=600
    )
    assert graph.returncode == 0, graph.stderr[-3000:]
    names = dict(re.findall(r"^\s*(\d+)\[label = \"(\w+)\"", graph.stdout, flags=re.M))
    edges = {(names[a], names[b]) for a, b in re.findall(r"^\s*(\d+) -> (\d+)", graph.stdout, flags=re.M)}
    assert ("prepare_shift", "select_soups") in edges
    assert ("prepare_shift", "evaluate_soups_shifts") in edges
    # The rules' params name each part's split inside the folder prepare_shift writes.
    from robustsoup.paths import RunPaths
    from robustsoup.run_config import resolve_config

    paths = RunPaths(resolve_config(yaml.safe_load(config.read_text())))
    assert paths.shift_dirs() == ["results/cifar10/data/cifar10-c"]
    assert paths.shift_splits("test")["cifar10-c"] == {
        "fog/3": "results/cifar10/data/cifar10-c/fog/3/test.safetensors",
        "contrast/3": "results/cifar10/data/cifar10-c/contrast/3/test.safetensors",
    }
    changed = yaml.safe_load(config.read_text())
    changed["data"]["shifts"] = {}
    without = RunPaths(resolve_config(changed))
    for rule in ("select_soups", "evaluate_soups_shifts"):
        assert without.rerun(rule) != paths.rerun(rule)  # adding or removing a shift reruns the soups
