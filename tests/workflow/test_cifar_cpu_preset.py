"""The laptop CIFAR-10 preset, shrunk to a few images per class of a generated ImageFolder, through the
whole workflow (issue 16): every study runs on an ImageFolder data set with the preset's own choices
(train / test subsets, from-scratch references, generated CIFAR-10-C, RWS levels, distillation)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO
from data_fixtures import write_cifar_image_folder
from snakemake_output import snakemake_command

pytestmark = pytest.mark.workflow
PRESET = REPO / "config" / "presets" / "cifar10-cpu.yaml"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TINY = {"epochs": 1, "batch_size": 64}


def micro_preset(root: Path) -> dict:
    """The preset as shipped, with every size cut to seconds; the structure of the run is unchanged."""
    config = yaml.safe_load(PRESET.read_text())
    config["data"].update(
        root=str(root),
        train_per_class=4,
        test_per_class=3,
        k_adapt_per_class=1,
        corruptions=["impulse_noise", "glass_blur", "fog", "contrast"],
        severities=[3, 5],
    )
    config["model"]["width"] = 4
    config["pretrain"].update(epochs=1, batch_size=64, attack_steps=1)
    for target in config["finetune"].values():
        target.update(epochs=1, batch_size=64, **({"attack_steps": 1} if target["norm"] != "none" else {}))
    config["soups"]["weights"] = {"start": 0.0, "stop": 1.0, "step": 0.5}
    config["soups"]["search"].update(step=0.5, k=[10], learned_steps=2)
    config["soups"]["ternary"].update(step=0.5, n_images=4, n_iter=2)
    config["evaluate"].update(n_images=6, n_iter=2, batch_size=8)
    rws = config["rws"]
    rws.update(eval_severities=[5], lambdas=[0, 1], compose_lambdas=[0, 1], compose_severity=5, sweep_images=6)
    rws.update(init=TINY, finetune=TINY, oracle_free={"batch_size": 10, "steps": 5})
    distill = config["distill"]
    for role in ("teacher", "student"):
        distill[role].update(width=4, training=TINY)
    distill["augmentation"]["corruptions"] = ["gaussian_blur"]
    distill["distillation"].update(epochs=1, batch_size=64)
    distill["finetune"] = TINY
    distill["selection"].update(mc_samples=2, quantiles=3, n_adapt_images=5)
    distill["evaluate"] = {"n_images": 3}
    return config


def test_the_cifar10_cpu_preset_runs_every_study_on_an_image_folder(tmp_path):
    root = tmp_path / "cifar10"
    write_cifar_image_folder(root, CLASSES, {"train": 6, "test": 5})
    config = tmp_path / "preset.yaml"
    config.write_text(yaml.safe_dump(micro_preset(root)))
    workdir = tmp_path / "run"
    command = snakemake_command(workdir, config, "--cores", "2")
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    results = workdir / "results" / "cifar10"
    metrics = pd.read_csv(results / "metrics" / "all.tsv", sep="\t")
    assert {"lp", "soups-shifts", "soups-ternary", "rws", "distill"} <= set(metrics["study"])
    lp = metrics[(metrics["study"] == "lp") & (metrics["threat"] == "none")]
    assert {"scratch-l2", "scratch-l1", "linf-l2", "linf-l1"} <= set(lp["model"])
    assert set(lp["n"]) == {30}  # 3 test images per class, the preset's subset
    accuracy = (results / "tables" / "accuracy.md").read_text()
    assert "scratch-l1" in accuracy and "L1, 1 ep × 1 steps" in accuracy
    table1 = (results / "tables" / "rws_table1.md").read_text()
    assert "16 levels (4 bit)" in table1 and "8 levels (3 bit)" in table1
    teacher = json.loads((results / "models" / "teacher.json").read_text())
    assert teacher["training"]["shift"]["clean_fraction"] == 0.0  # the preset's teacher sees shifted images only
    for name in ("soups_shifts", "distill", "rws_table4", "benchmarks"):
        assert (results / "tables" / f"{name}.html").stat().st_size > 500, name
    # The preset stands alone: what the run resolved is exactly what `robustsoup config` prints,
    # and no key of the digits default leaks in.
    written = (results / "config.resolved.yaml").read_text()
    robustsoup = str(Path(sys.executable).with_name("robustsoup"))
    printed = subprocess.run([robustsoup, "config", str(config)], capture_output=True, text=True, check=True)
    assert written == printed.stdout
    resolved, digits = yaml.safe_load(written), yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert resolved["model"]["activation"] == "softplus" != digits["model"]["activation"]
    assert resolved["pretrain"]["batch_size"] == 64 != digits["pretrain"]["batch_size"]
