"""A training rule with gpus: 2 on the CPU: the Snakemake job asks for gpu=2 and trains as 2 gloo ranks."""

from __future__ import annotations

import json
import subprocess

import pytest
import yaml

from conftest import REPO
from snakemake_output import snakemake_command

pytestmark = pytest.mark.workflow


def test_pretrain_with_gpus_2_runs_as_two_ranks_in_one_job(tmp_path):
    config = yaml.safe_load((REPO / "tests" / "configs" / "micro.yaml").read_text())
    config["pretrain"].update(gpus=2, sync_batchnorm=True)
    configfile = tmp_path / "two.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    target = "results/digits/seed-0/models/linf.safetensors"
    command = snakemake_command(workdir, configfile, "--cores", "2", target, "--resources", "gpu=2")
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    sidecar = json.loads((workdir / target).with_suffix(".json").read_text())
    assert sidecar["training"]["distributed"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": True}
    assert not (workdir / target).with_suffix(".resume.pt").exists()
    log = (workdir / "logs" / "pretrain" / "digits" / "seed-0" / "linf.log").read_text()
    assert "launching 2 ranks (gloo, " in log
    for rank in (0, 1):  # every rank's lines are in the job's log
        assert f"INFO rank {rank} robustsoup.train.run: training linf" in log
    ranks_precision = sidecar["training"]["precision"]  # the job's record says what its ranks computed in
    assert "robustsoup-job: rule=pretrain inside_s=" in log and f"precision={ranks_precision} " in log
