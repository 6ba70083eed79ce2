"""robustsoup.paths: one run's names, paths, rerun keys and parse-time checks (torch-free)."""

from __future__ import annotations

import copy

import pytest

from robustsoup.config import ConfigError
from robustsoup.paths import RunPaths, alternatives, asked_targets, resolve_run_config


def run_paths(**sections) -> RunPaths:
    return RunPaths(resolve_run_config(sections))


def test_paths_and_names_of_the_default_run():
    p = run_paths()
    assert p.root == "results/digits" and p.results == "results/digits/seed-{seed}" and p.parent == "linf"
    assert p.data["train"] == "results/digits/data/train.safetensors"  # shared by the seeds
    assert p.model("linf-l2") == "results/digits/seed-{seed}/models/linf-l2.safetensors"
    assert RunPaths(p.config, 0).model("linf-l2") == "results/digits/seed-0/models/linf-l2.safetensors"
    soup = next(iter(p.soups))
    assert set(p.soup_ingredients(soup)) == set(p.soup_weights(soup)) <= set(p.base_models)
    assert p.corrupted_input("test") == {"corrupted": "results/digits/data/corrupted/test"}
    assert p.rws is not None and p.distill is not None
    assert p.rws.signature("fog", "8bit") == "results/digits/seed-{seed}/rws/fog-8bit.safetensors"
    assert p.final_outputs()[-1] == "results/digits/tables/benchmarks.csv"
    assert "results/digits/tables/benchmarks.csv" not in p.study_outputs()


def test_a_disabled_study_has_no_paths_and_is_not_cross_checked():
    config = {"rws": {"enabled": False, "compose": ["not-a-corruption", "fog"]}, "distill": {"enabled": False}}
    p = run_paths(**config)
    assert p.rws is None and p.distill is None
    assert not any("rws" in path or "distill" in path for path in p.final_outputs())
    with pytest.raises(ConfigError, match="rws.compose"):
        resolve_run_config({"rws": {"compose": ["not-a-corruption", "fog"]}})


def test_rerun_keys_hold_exactly_what_a_rule_depends_on():
    base = resolve_run_config({})
    changed = copy.deepcopy(base)
    changed["soups"]["weights"]["step"] = 0.5
    a, b = RunPaths(base), RunPaths(changed)
    assert a.rerun("pretrain") == b.rerun("pretrain")  # the soup grid does not retrain the parent
    assert a.rerun("report_lp") != b.rerun("report_lp")
    assert a.rerun("report_soups") != b.rerun("report_soups")  # soups/grid.tsv and the soup-line figures
    changed = copy.deepcopy(base)
    changed["finetune"]["l2"]["epochs"] += 1
    c = RunPaths(changed)
    assert c.rerun("finetune", "l2") != a.rerun("finetune", "l2")
    assert c.rerun("finetune", "l1") == a.rerun("finetune", "l1")
    assert c.rerun("train_rws_init") == a.rerun("train_rws_init")
    with pytest.raises(KeyError, match="no rerun keys"):
        a.rerun("no_such_rule")


def test_missing_pretrained_weights_fail_at_parse_time_naming_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = run_paths(model={"weights": "zoo/pretr_Linf.pth"})
    assert p.external_weights() == {"model.weights": "zoo/pretr_Linf.pth"}
    with pytest.raises(ConfigError, match=r"'model.weights'.*zoo/pretr_Linf.pth does not exist"):
        p.check_external_files()
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "pretr_Linf.pth").write_bytes(b"x")
    p.check_external_files()


def test_a_robustbench_parent_needs_its_zoo_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"dataset": "cifar10", "data": {"root": str(tmp_path)}}
    config["model"] = {"architecture": "robustbench:Carmon2019Unlabeled", "model_dir": "rb"}
    p = run_paths(**config)
    expected = "rb/cifar10/Linf/Carmon2019Unlabeled.pt"
    assert p.external_weights() == {"model.model_dir": expected}
    with pytest.raises(ConfigError, match=expected):
        p.check_external_files()


def test_device_cuda_without_a_gpu_fails_only_where_jobs_run(monkeypatch):
    import robustsoup.paths as paths

    monkeypatch.setattr(paths, "GPU_DRIVER_FILES", ("/nonexistent/nvidia",))
    p = run_paths(device="cuda")
    with pytest.raises(ConfigError, match=r"'device': cuda.*no GPU driver"):
        p.check_device(jobs_run_here=True)
    p.check_device(jobs_run_here=False)  # a cluster's login node: the compute nodes have the GPUs
    run_paths(device="auto").check_device(jobs_run_here=True)


def test_reference_models_are_evaluated_but_never_a_soup_ingredient():
    p = run_paths(references=["L2", "L1"])
    assert p.references == ["scratch-l2", "scratch-l1"]
    assert set(p.references) <= set(p.all_models) and not set(p.references) & set(p.base_models)
    assert all(not set(p.soup_ingredients(s)) & set(p.references) for s in p.soups)
    assert p.rerun("pretrain_reference", "scratch-l2") != p.rerun("pretrain_reference", "scratch-l1")
    with pytest.raises(ConfigError, match="references"):
        resolve_run_config({"references": ["L3"]})


def test_sharded_evaluation_has_its_own_rules_files_and_the_same_rerun_keys():
    whole, sharded = run_paths(), run_paths(evaluate={"shards": 3})
    everyone, nobody = whole.evaluated_models(sharded=False), whole.evaluated_models(sharded=True)
    assert (everyone, nobody) == (sharded.evaluated_models(sharded=True), sharded.evaluated_models(sharded=False))
    assert nobody == alternatives([]) and everyone == alternatives(whole.all_models)
    # One job or three write the same numbers: the count is no rerun key (a new count still reruns the
    # evaluation, as other rules with other inputs now write its files).
    for rule in ("evaluate_model", "evaluate_model_shard", "merge_model_shards"):
        assert sharded.rerun(rule) == whole.rerun("evaluate_model")
    assert sharded.evaluation_outputs("linf") == whole.evaluation_outputs("linf")
    shards = sharded.evaluation_shards("linf")
    assert list(shards) == list(whole.evaluation_outputs("linf"))
    folder = "results/digits/seed-{seed}/metrics/linf/test/shards"
    assert shards["L1_points"] == [f"{folder}/{s}-of-3/L1.points.tsv" for s in range(3)]
    assert sharded.evaluation_shard_outputs("linf", "2")["clean_rows"] == shards["clean_rows"][2]
    assert run_paths(evaluate={"batch_size": 64}).rerun("evaluate_model") != whole.rerun("evaluate_model")


def test_a_training_rule_asks_for_its_sections_gpus():
    base = resolve_run_config({})
    base["finetune"]["l2"]["gpus"] = 4
    base["rws"]["finetune"]["gpus"] = 2
    p = run_paths(finetune=base["finetune"], rws=base["rws"])
    assert p.gpus("finetune", "l2") == 4 and p.gpus("finetune", "l1") == 1 and p.gpus("pretrain") == 1
    assert p.gpus("rws", "finetune") == 2 and p.gpus("distill", "teacher", "training") == 1
    with pytest.raises(ConfigError, match="gpus"):
        run_paths(pretrain={"gpus": 0})


def test_file_list_splits_run_every_study_and_can_read_an_on_disk_imagenet_c():
    """ImageNet with file-list splits: RWS and distillation run on corrupted copies in the ImageNet-C layout,
    generated by corrupt_split or, with data.corrupted_from: imagenet-c, read from the configured ImageNet-C."""
    data = {"root": "in", "k_adapt_per_class": 1, "cache_max_images": 0}
    p = run_paths(dataset="imagenet", data=data)
    assert p.data["adapt"].endswith(".tsv") and p.data["test"].endswith(".tsv")
    assert p.rws is not None and p.distill is not None
    assert p.corrupted_dir("test") == p.corrupted_output("test") == "results/imagenet/data/corrupted/test"
    assert "results/imagenet/seed-0/metrics/rws.tsv" in p.study_outputs()
    assert "results/imagenet/seed-0/metrics/distill.tsv" in p.study_outputs()
    on_disk = run_paths(
        dataset="imagenet", data={**data, "shifts": {"imagenet-c": "in-c"}, "corrupted_from": "imagenet-c"}
    )
    assert on_disk.corrupted_dir("adapt") == on_disk.corrupted_dir("test") == "in-c"
    assert on_disk.distill.evaluation_inputs("student-multihead")["corrupted_adapt"] == "in-c"
    with pytest.raises(ConfigError, match=r"'data.corrupted_from'.*data.shifts.imagenet-c"):
        run_paths(dataset="imagenet", data={**data, "corrupted_from": "imagenet-c"})
    with pytest.raises(ConfigError, match=r"'data.corrupted_from'.*decoded splits \['adapt'\]"):
        decoded_adapt = {**data, "cache_max_images": 1000, "shifts": {"imagenet-c": "in-c"}}
        run_paths(dataset="imagenet", data={**decoded_adapt, "corrupted_from": "imagenet-c"})


def test_nodes_above_one_need_slurm_and_at_most_gpus(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    p = run_paths(pretrain={"gpus": 4, "nodes": 2})
    assert p.nodes("pretrain") == 2 and p.gpus("pretrain") == 4 and p.nodes("finetune", "l2") == 1
    with pytest.raises(ConfigError, match=r"'pretrain.nodes': 2.*--profile profiles/slurm.*pretrain.nodes: 1"):
        p.check_nodes(jobs_run_here=True)
    p.check_nodes(jobs_run_here=False)  # submitted to SLURM
    monkeypatch.setenv("SLURM_JOB_ID", "12")  # the workflow started inside a SLURM job
    p.check_nodes(jobs_run_here=True)
    with pytest.raises(ConfigError, match=r"'rws.init.nodes': 3 nodes for gpus: 2.*at most 2"):
        run_paths(rws={"init": {"gpus": 2, "nodes": 3}}).check_nodes(jobs_run_here=False)


def test_the_closing_message_lists_only_files_that_exist_and_says_when_only_some_targets_ran():
    from types import SimpleNamespace

    p = run_paths()
    written = {"results/digits/tables/accuracy.md", "results/digits/seed-0/figures/soup_ternary.png"}
    whole = p.report_locations([], exists=lambda path: True)
    assert "the run is complete" in whole and "not written yet" not in whole
    assert "  results/digits/tables/accuracy.md" in whole and "metrics (tidy rows)" in whole

    one_target = SimpleNamespace(
        targets={"results/digits/seed-0/models/linf.safetensors"}, until=set(), omit_from=set()
    )
    asked = asked_targets(one_target)
    assert asked == ["results/digits/seed-0/models/linf.safetensors"]
    part = p.report_locations(asked, exists=written.__contains__)
    listed = [line.strip() for line in part.splitlines() if line.startswith("  ")]
    assert sorted(listed) == sorted(written)
    assert "the run is complete" not in part and "(results/digits/seed-0/models/linf.safetensors)" in part
    assert "not the whole run" in part and "`snakemake` with no target writes them all" in part

    nothing = p.report_locations(asked, exists=lambda path: False)
    assert (
        "No table or figure is written yet; `snakemake` with no target writes all" in nothing
        and "results/digits" not in nothing.split(")", 1)[1]
    )
    assert asked_targets(SimpleNamespace(targets={"all"}, until={"select_soups"}, omit_from=set())) == [
        "--until select_soups"
    ]
    assert asked_targets(SimpleNamespace(targets=set(), until=set(), omit_from=set())) == []
