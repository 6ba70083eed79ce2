"""robustsoup.resources: the trainings' gpu and nodes resources and the parse-time checks of the machine and
of the files from outside the run (torch-free)."""

from __future__ import annotations

import pytest

from robustsoup import resources
from robustsoup.config import ConfigError
from robustsoup.paths import RunPaths
from robustsoup.resources import TrainingResources, check_device, check_external_files, check_nodes
from robustsoup.run_config import resolve_config


def run_paths(**sections) -> RunPaths:
    return RunPaths(resolve_config(sections))


def test_missing_pretrained_weights_fail_at_parse_time_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = run_paths(model={"weights": "zoo/pretr_Linf.pth"})
    assert p.external_weights() == {"model.weights": "zoo/pretr_Linf.pth"}
    with pytest.raises(ConfigError, match=r"'model.weights'.*zoo/pretr_Linf.pth does not exist"):
        check_external_files(p)
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "pretr_Linf.pth").write_bytes(b"x")
    check_external_files(p)


def test_a_robustbench_parent_needs_its_zoo_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"dataset": "cifar10", "data": {"root": str(tmp_path)}}
    config["model"] = {"architecture": "robustbench:Carmon2019Unlabeled", "model_dir": "rb"}
    p = run_paths(**config)
    expected = "rb/cifar10/Linf/Carmon2019Unlabeled.pt"
    assert p.external_weights() == {"model.model_dir": expected}
    with pytest.raises(ConfigError, match=expected):
        check_external_files(p)


def test_device_cuda_without_a_gpu_fails_only_where_jobs_run(monkeypatch):
    monkeypatch.setattr(resources, "GPU_DRIVER_FILES", ("/nonexistent/nvidia",))
    config = resolve_config({"device": "cuda"})
    with pytest.raises(ConfigError, match=r"'device': cuda.*no GPU driver"):
        check_device(config, jobs_run_here=True)
    check_device(config, jobs_run_here=False)  # a cluster's login node: the compute nodes have the GPUs
    check_device(resolve_config({"device": "auto"}), jobs_run_here=True)


def test_a_training_rule_asks_for_its_sections_gpus():
    base = resolve_config({})
    base["finetune"]["l2"]["gpus"] = 4
    base["rws"]["finetune"]["gpus"] = 2
    p = TrainingResources(resolve_config({"finetune": base["finetune"], "rws": base["rws"]}))
    assert p.gpus("finetune", "l2") == 4 and p.gpus("finetune", "l1") == 1 and p.gpus("pretrain") == 1
    assert p.gpus("rws", "finetune") == 2 and p.gpus("distill", "teacher", "training") == 1
    with pytest.raises(ConfigError, match="gpus"):
        resolve_config({"pretrain": {"gpus": 0}})


def test_nodes_above_one_need_slurm_and_at_most_gpus(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    config = resolve_config({"pretrain": {"gpus": 4, "nodes": 2}})
    p = TrainingResources(config)
    assert p.nodes("pretrain") == 2 and p.gpus("pretrain") == 4 and p.nodes("finetune", "l2") == 1
    with pytest.raises(ConfigError, match=r"'pretrain.nodes': 2.*--profile profiles/slurm.*pretrain.nodes: 1"):
        check_nodes(config, jobs_run_here=True)
    check_nodes(config, jobs_run_here=False)  # submitted to SLURM
    monkeypatch.setenv("SLURM_JOB_ID", "12")  # the workflow started inside a SLURM job
    check_nodes(config, jobs_run_here=True)
    with pytest.raises(ConfigError, match=r"'rws.init.nodes': 3 nodes for gpus: 2.*at most 2"):
        check_nodes(resolve_config({"rws": {"init": {"gpus": 2, "nodes": 3}}}), jobs_run_here=False)
    with pytest.raises(ConfigError, match=r"'distill.distillation.nodes': 2 nodes for gpus: 1"):
        check_nodes(resolve_config({"distill": {"distillation": {"nodes": 2}}}), jobs_run_here=False)
