"""The laptop CIFAR-10 preset, shrunk to a few images per class of a generated ImageFolder (issue 16).

The micro workflow run (test_workflow.py) already runs every rule; here only the jobs whose inputs the preset
makes different run for real: the ImageFolder read into train / test subsets, the generated CIFAR-10-C at two
severities, and a from-scratch L1 reference evaluated under every norm. The rest of the preset's DAG (every
study, its 16-level signatures included) is planned by dry runs (issue 30: the suite's time)."""

from __future__ import annotations

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


def test_the_cifar10_cpu_preset_runs_what_differs_on_an_image_folder_and_plans_every_study(tmp_path):
    import numpy as np

    from snakemake_output import job_stats

    root = tmp_path / "cifar10"
    write_cifar_image_folder(root, CLASSES, {"train": 6, "test": 5})
    config = tmp_path / "preset.yaml"
    config.write_text(yaml.safe_dump(micro_preset(root)))
    workdir = tmp_path / "run"
    results = workdir / "results" / "cifar10"
    targets = ["results/cifar10/data/corrupted/test", "results/cifar10/seed-0/metrics/scratch-l1/test/clean.tsv"]
    command = snakemake_command(workdir, config, "--cores", "2", *targets)
    result = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    ran = job_stats(result.stdout + result.stderr)
    assert ran == {"prepare_data": 1, "corrupt_split": 1, "pretrain_reference": 1, "evaluate_model": 1}, ran
    rows = pd.concat(
        pd.read_csv(results / "seed-0" / "metrics" / "scratch-l1" / "test" / f"{threat}.tsv", sep="\t")
        for threat in ("clean", "Linf", "L2", "L1")
    )
    clean = rows[rows["threat"] == "none"]
    assert set(clean["n"]) == {30} and set(clean["evalset"]) == {"test"}  # 3 test images per class, the subset
    assert {"Linf", "L2", "L1"} <= set(rows["threat"])
    assert '"norm": "L1"' in (results / "seed-0" / "models" / "scratch-l1.json").read_text()
    # the generated CIFAR-10-C: the preset's corruptions at its two severities, in Hendrycks' layout
    corrupted = results / "data" / "corrupted" / "test"
    assert np.load(corrupted / "labels.npy").shape == (2 * 30,)
    for name in ("impulse_noise", "glass_blur", "fog", "contrast"):
        assert np.load(corrupted / f"{name}.npy", mmap_mode="r").shape == (60, 32, 32, 3), name
    # The rest of the DAG, planned: every study's jobs, none of what ran again, the 16-level signatures among them
    planned = subprocess.run(
        [*snakemake_command(workdir, config, "--cores", "2", "--dry-run")], capture_output=True, text=True, timeout=600
    )
    assert planned.returncode == 0, planned.stderr[-3000:]
    jobs = job_stats(planned.stdout)
    assert {"report_lp", "report_soups", "report_rws", "report_distill", "summarize_benchmarks"} <= set(jobs)
    assert jobs["pretrain_reference"] == 1 and jobs["evaluate_model"] == 7 and "prepare_data" not in jobs
    assert jobs["corrupt_split"] == 1  # the adaptation split's copy; the test split's is made
    sixteen = subprocess.run(
        [*snakemake_command(workdir, config, "--dry-run", "results/cifar10/seed-0/rws/fog-16levels.safetensors")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sixteen.returncode == 0 and job_stats(sixteen.stdout)["quantize_rws"] == 1, sixteen.stderr[-3000:]
    # The preset stands alone: what the run resolved is exactly what `robustsoup config` prints,
    # and no key of the digits default leaks in.
    written = (results / "config.resolved.yaml").read_text()
    robustsoup = str(Path(sys.executable).with_name("robustsoup"))
    printed = subprocess.run([robustsoup, "config", str(config)], capture_output=True, text=True, check=True)
    assert written == printed.stdout
    resolved, digits = yaml.safe_load(written), yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert resolved["model"]["activation"] == "softplus" != digits["model"]["activation"]
    assert resolved["pretrain"]["batch_size"] == 64 != digits["pretrain"]["batch_size"]
    assert resolved["rws"]["deploy"] == "16levels"
