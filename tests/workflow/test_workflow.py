"""The workflow end to end on the micro config: every rule, real Snakemake, seconds."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import yaml

from conftest import REPO
from snakemake_output import job_stats, snakemake_command

pytestmark = pytest.mark.workflow
MICRO = REPO / "tests" / "configs" / "micro.yaml"


def snakemake(
    workdir: Path, *args: str, configfile: Path = MICRO, env: dict | None = None
) -> subprocess.CompletedProcess:
    command = snakemake_command(workdir, configfile, "--cores", "2", *args)
    return subprocess.run(command, capture_output=True, text=True, timeout=900, env=env)


def planned_jobs(result: subprocess.CompletedProcess) -> dict[str, int]:
    """The 'Job stats' table of a dry run, as {rule: count}."""
    return job_stats(result.stdout)


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("micro")
    result = snakemake(workdir)
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir


def test_micro_dag_writes_metrics_tables_and_figure(micro_run):
    results = micro_run / "results" / "digits" / "seed-0"  # the run's one seed
    metrics = pd.read_csv(results / "metrics" / "all.tsv", sep="\t")
    for column in ["model", "evalset", "threat", "eps", "severity", "n", "accuracy"]:
        assert column in metrics.columns
    lp = metrics[metrics["study"] == "lp"]
    assert set(lp["model"]) == {
        "linf",
        "linf-l2",
        "linf-l1",
        "linf-nominal",
        "scratch-l2",
        "soup-linf_0.5-linf-l2_0.5",
    }
    assert set(lp["threat"]) == {"none", "none@attacked", "Linf", "L2", "L1", "union"}
    assert metrics["accuracy"].between(0, 1).all()
    union = lp[lp["threat"] == "union"].set_index("model")["accuracy"]
    per_norm = lp[lp["threat"].isin(["Linf", "L2", "L1"])].groupby("model")["accuracy"].min()
    assert (union.sort_index() <= per_norm.sort_index() + 1e-12).all()
    table = (results / "tables" / "accuracy.md").read_text()
    assert "| linf-l2 |" in table and "apgd-ce(2it×1)" in table
    assert (results / "figures" / "soup_line_linf_linf-l2.png").stat().st_size > 1000
    assert (results / "figures" / "soup_line_linf_linf-l2.pdf").exists()
    shifts = metrics[metrics["study"] == "soups-shifts"]
    assert set(shifts["evalset"]) == {"clean", "noise", "blur", "weather", "digital"}
    assert {"soup-single", "ensemble-linf+linf-nominal"} <= set(shifts["model"])
    soups_table = (results / "tables" / "soups_shifts.md").read_text()
    assert "per-shift soups (halving, k=20)" in soups_table and "| 4× |" in soups_table
    selection = pd.read_csv(results / "soups" / "selection.tsv", sep="\t")
    assert set(selection["method"]) == {
        "grid",
        "halving",
        "greedy",
        "learned",
        "entropy",
        "agreement",
        "bn_distance",
        "infomax",
        "single",
    }
    ternary = metrics[metrics["study"] == "soups-ternary"]
    assert len(set(ternary["model"])) == 6 and "union" in set(ternary["threat"])
    for figure in ["soup_composition", "soup_ternary"]:
        assert (results / "figures" / f"{figure}.png").stat().st_size > 1000
    for name in ["linf", "linf-l2", "soup-linf_0.5-linf-l2_0.5"]:
        assert (results / "models" / f"{name}.json").exists()
    assert (micro_run / "logs" / "pretrain" / "digits" / "seed-0" / "linf.log").read_text().strip()
    assert list((micro_run / "benchmarks" / "evaluate_model" / "digits" / "seed-0").glob("*.tsv"))
    assert (
        "robustsoup-job: rule=pretrain"
        in (micro_run / "logs" / "pretrain" / "digits" / "seed-0" / "linf.log").read_text()
    )
    assert "total cost" in table and "| L∞, ε=0.1 |" in table
    # long jobs count their steps: i/N and an ETA, as plain lines (no carriage return in any log)
    for log in (
        "select_soups/digits/seed-0.log",
        "evaluate_model/digits/seed-0/linf.log",
        "pretrain/digits/seed-0/linf.log",
    ):
        text = (micro_run / "logs" / log).read_text()
        assert re.search(r"robustsoup.progress: .+: \d+/\d+ [\w ]+ \(\d+%\), \S+ elapsed, ETA \S+\n", text), log
    assert not [log for log in (micro_run / "logs").rglob("*.log") if b"\r" in log.read_bytes()]


def test_micro_rws_rows_tables_figures_and_exact_unpatch(micro_run):
    results = micro_run / "results" / "digits" / "seed-0"
    rws = pd.read_csv(results / "metrics" / "rws.tsv", sep="\t")
    assert {
        "standard",
        "augment",
        "expert-fog",
        "rws-fog",
        "rws-fog-all",
        "rws-fog-8bit",
        "rws-fog-8levels",
        "rws-auto",
        "rws-fog@standard-s1-shared",
    } <= set(rws["model"])
    assert set(rws["threat"]) == {"none"} and set(rws["attack"]) == {"clean"}
    standard = rws[(rws["model"] == "standard") & (rws["corruption"] == "none")]["correct"].item()
    assert (rws[rws["model"].str.endswith("-off")]["correct"] == standard).all()  # unpatched = standard
    for name in ("table1", "table4", "oracle_free", "transfer"):
        assert (results / "tables" / f"rws_{name}.md").read_text().startswith("# ")
        assert "<table>" in (results / "tables" / f"rws_{name}.html").read_text(encoding="utf-8")
    for name in ("lambda", "layer_norms", "compose"):
        assert (results / "figures" / f"rws_{name}.png").stat().st_size > 1000
        assert "data:image/png;base64," in (results / "figures" / f"rws_{name}.html").read_text(encoding="utf-8")
    expert = json.loads((results / "models" / "rws" / "expert-fog.json").read_text())
    assert expert["training"]["selection"].startswith("accuracy on the adapt split corrupted by fog")
    # two epochs (micro.yaml): the kept one is the better on the corrupted adapt split (ties: the earlier), and
    # the written weights score exactly that
    scores = [row["selection_score"] for row in expert["metrics"]["train_history"]]
    assert len(scores) == 2 and expert["metrics"]["selected_epoch"] == 1 + scores.index(max(scores))
    adapt = _correct(micro_run, "results/digits/seed-0/models/rws/expert-fog.safetensors", [], "fog", 3, split="adapt")
    assert expert["metrics"]["selection_score"] == max(scores) == pytest.approx(adapt.float().mean().item())
    assert (results / "rws" / "fog-8bit.safetensors").stat().st_size < (
        results / "rws" / "fog-all.safetensors"
    ).stat().st_size


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc), children first."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def test_a_training_job_killed_mid_run_resumes_when_the_workflow_runs_again(tmp_path):
    """The job's process dies after an epoch (an OOM kill, a preempted node): Snakemake reports the failure,
    the resume state beside the output survives, and running the workflow again resumes after that epoch."""
    config = yaml.safe_load(MICRO.read_text())
    config["pretrain"]["epochs"] = 6
    configfile = tmp_path / "long.yaml"
    configfile.write_text(yaml.safe_dump(config))
    workdir, target = tmp_path / "run", "results/digits/seed-0/models/linf.safetensors"
    state = workdir / "results" / "digits" / "seed-0" / "models" / "linf.resume.pt"
    command = snakemake_command(workdir, configfile, "--cores", "1", target)
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 600
        while not state.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert state.exists(), "no resume state was written after the first epoch"
        for pid in _descendants(first.pid):  # the job, not Snakemake itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        assert first.wait(timeout=300) != 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert state.exists() and not (workdir / target).exists()
    epochs_done = torch_epoch(state)
    assert 1 <= epochs_done < 6
    again = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    log = (workdir / "logs" / "pretrain" / "digits" / "seed-0" / "linf.log").read_text()
    assert re.search(rf"resuming from \S*linf\.resume\.pt after epoch {epochs_done} of 6", log), log[-2000:]
    resumed = log[log.index("resuming from") :]  # the second job's part of the log
    assert f"epoch {epochs_done + 1}/6 loss" in resumed and "epoch 1/6 loss" not in resumed
    assert not state.exists()  # removed once the checkpoint is written
    meta = json.loads((workdir / target).with_suffix(".json").read_text())
    assert meta["training"]["epochs"] == 6


def torch_epoch(path: Path) -> int:
    import torch

    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"])


def _correct(run: Path, model: str, patches, corruption: str, severity: int, n=None, split="test"):
    """Per-image correctness of ``model`` (a checkpoint of the run), patched with ``patches`` ([(signature, λ)]),
    on the first ``n`` images of ``split`` (clean, or its corrupted copy): recomputed here from the files."""
    import torch

    from robustsoup.checkpoint import load_model
    from robustsoup.data import load_split
    from robustsoup.data.corruptions import read_corrupted_split
    from robustsoup.rws.patching import patched
    from robustsoup.rws.signature_file import load_signature

    net, _ = load_model(run / model)
    if corruption == "none":
        data = load_split(run / f"results/digits/data/{split}.safetensors")
        images, labels = data.images, data.labels
    else:
        folder = run / f"results/digits/data/corrupted/{split}"
        images, labels = read_corrupted_split(folder, corruption, severity, severities=(3,))
    images, labels = images[:n], labels[:n]
    signatures = [load_signature(run / path) for path, _ in patches]
    with patched(net, signatures, [c for _, c in patches]), torch.no_grad():
        return net(images.float() / 255).argmax(1) == labels


def test_micro_rws_tables_recomputed_from_the_written_checkpoints(micro_run):
    """One value of each RWS evaluation (λ sweep, composition, oracle-free, transfer), recomputed from the
    standard models and the deployed signatures on disk; the oracle-free λ from the adaptation split."""
    import torch

    from robustsoup.paths import RunPaths
    from robustsoup.run_config import resolve_config
    from robustsoup.rws.config import compose_name, lambda_name

    rws = RunPaths(resolve_config(yaml.safe_load(MICRO.read_text())), 0).rws
    metrics = micro_run / rws.metrics
    standard, signatures = rws.model("standard"), rws.signatures(rws.deploy)
    fog, contrast = signatures["fog"], signatures["contrast"]

    def row(table: str, model: str, corruption: str) -> pd.Series:
        frame = pd.read_csv(metrics / f"{table}.tsv", sep="\t")
        return frame[(frame["model"] == model) & (frame["corruption"] == corruption)].squeeze()

    # the micro models are near chance on corrupted images whatever λ; on clean images the patch changes answers
    sweep = row("lambda", lambda_name("fog", 1), "none")
    patched_fog = _correct(micro_run, standard, [(fog, 1)], "none", 0, 20)
    assert sweep["n"] == 20 and sweep["correct"] == int(patched_fog.sum())
    assert not torch.equal(patched_fog, _correct(micro_run, standard, [], "none", 0, 20))  # λ matters here
    both = row("compose", compose_name("fog", 0, "contrast", 1), "none")
    assert both["correct"] == int(_correct(micro_run, standard, [(fog, 0), (contrast, 1)], "none", 0, 20).sum())
    target = "standard-s1-shared"
    for name, patches in ((target, []), (f"rws-fog@{target}", [(fog, 1)]), (f"rws-contrast@{target}", [(contrast, 1)])):
        transfer = row("transfer", name, "none")
        on_target = _correct(micro_run, rws.model(target), patches, "none", 0)
        assert transfer["n"] == 40 and transfer["correct"] == int(on_target.sum()), name
    # oracle-free: λ of fog at severity 3 is the better of rws.lambdas on the adaptation split (ties: smaller)
    detector = pd.read_csv(metrics / "oracle_free_detector.tsv", sep="\t").set_index(["corruption", "severity"])
    on_adapt = [int(_correct(micro_run, standard, [(fog, c)], "fog", 3, split="adapt").sum()) for c in (0, 1)]
    assert detector.loc[("fog", 3), "lambda"] == (1.0 if on_adapt[1] > on_adapt[0] else 0.0)
    tuned = row("oracle_free", "rws-oracle-tuned", "fog")
    lam = detector.loc[("fog", 3), "lambda"]
    assert tuned["correct"] == int(_correct(micro_run, standard, [(fog, lam)], "fog", 3).sum())


def test_micro_ternary_soup_recomputed_from_the_written_checkpoints(micro_run):
    """The clean rows of the half-and-half soup of two corners (evaluate_ternary), recomputed from the models."""
    import torch

    from robustsoup.checkpoint import load_checkpoint
    from robustsoup.data import load_split
    from robustsoup.paths import RunPaths
    from robustsoup.run_config import resolve_config
    from robustsoup.soups.grid import soup_id
    from robustsoup.weights import affine_combination

    paths = RunPaths(resolve_config(yaml.safe_load(MICRO.read_text())), 0)
    a, b = paths.config["soups"]["ternary"]["models"][:2]
    (first, meta), (second, _) = (load_checkpoint(micro_run / paths.model(m)) for m in (a, b))
    soup = meta.build().eval()
    soup.load_state_dict(affine_combination([first, second], [0.5, 0.5]))
    test = load_split(micro_run / "results" / "digits" / "data" / "test.safetensors")
    with torch.no_grad():
        correct = soup(test.images.float() / 255).argmax(1) == test.labels
    ternary = pd.read_csv(micro_run / "results" / "digits" / "seed-0" / "metrics" / "soups" / "ternary.tsv", sep="\t")
    rows = ternary[ternary["model"] == soup_id({a: 0.5, b: 0.5}, paths.base_models)].set_index("threat")
    n = paths.config["soups"]["ternary"]["n_images"]  # the attacked images: the first n
    assert rows.loc["none", "n"] == len(test) and rows.loc["none", "correct"] == int(correct.sum())
    assert rows.loc["none@attacked", "n"] == n and rows.loc["none@attacked", "correct"] == int(correct[:n].sum())


def test_rerun_with_nothing_changed_does_no_work(micro_run):
    result = snakemake(micro_run, "--dry-run")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Nothing to be done" in result.stdout + result.stderr


def test_changing_only_the_soup_grid_reruns_only_soups_and_later(micro_run, tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["soups"]["weights"] = {"start": 0.0, "stop": 1.0, "step": 0.25}
    changed = tmp_path / "grid.yaml"
    changed.write_text(yaml.safe_dump(config, sort_keys=True))  # key order must not matter
    jobs = planned_jobs(snakemake(micro_run, "--dry-run", configfile=changed))
    # Three soups on the finer grid, one of which (w = 0.5) is already made.
    # report_soups writes soups/grid.tsv and draws the soup lines.
    expected = {
        "all": 1,
        "make_soup": 2,
        "evaluate_model": 2,
        "report_lp": 1,
        "report_soups": 1,
        "summarize_benchmarks": 1,
    }
    assert jobs == {**expected, "report_findings": 1, "report_seeds": 1}  # F2: the soup line; the tables over seeds


def test_micro_distillation_writes_rows_and_table(micro_run):
    results = micro_run / "results" / "digits" / "seed-0"
    rows = pd.read_csv(results / "metrics" / "distill.tsv", sep="\t")
    assert {"teacher", "student", "student-finetuned", "student-multihead", "student-multihead-oracle"} <= set(
        rows["model"]
    )
    assert set(rows["threat"]) == {"none"} and {"clean", "ours", "oracle"} <= set(rows["attack"])
    assert (rows["corruption"] == "none").groupby(rows["model"]).sum().eq(1).all()
    table = (results / "tables" / "distill.md").read_text()
    assert "| student-multihead | ours |" in table and "trainable params" in table
    assert "<table>" in (results / "tables" / "distill.html").read_text(encoding="utf-8")
    assert (results / "figures" / "distill.png").stat().st_size > 1000
    assert (results / "figures" / "distill.pdf").read_bytes().startswith(b"%PDF")
    assert '"architecture": "multihead"' in (results / "models" / "student-multihead.json").read_text()
    tidy = pd.read_csv(results / "metrics" / "all.tsv", sep="\t")
    assert {"lp", "soups-shifts", "rws", "distill"} <= set(tidy["study"])
    assert {"teacher", "student", "student-finetuned", "student-multihead"} <= set(
        tidy.loc[tidy["study"] == "distill", "model"]
    )


def test_changing_only_head_selection_reruns_only_the_multihead_evaluation(micro_run, tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["distill"]["selection"]["clean_weight"] = 0.8
    changed = tmp_path / "selection.yaml"
    changed.write_text(yaml.safe_dump(config))
    jobs = planned_jobs(snakemake(micro_run, "--dry-run", configfile=changed))
    assert jobs["evaluate_distilled"] == 1 and "report_distill" in jobs
    assert not {"train_teacher", "train_student", "distill_student", "finetune_student", "pretrain"} & set(jobs)


def test_sharded_evaluation_plans_shard_jobs_and_one_merge_per_model(tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["evaluate"].update(shards=2, batch_size=4)  # 8 attacked images: 2 batches, one per shard
    sharded = tmp_path / "sharded.yaml"
    sharded.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path / "run", "--dry-run", configfile=sharded)
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result)
    assert "evaluate_model" not in jobs
    assert jobs["merge_model_shards"] == 6 and jobs["evaluate_model_shard"] == 12  # the micro run's 6 models


@pytest.mark.parametrize("config", [MICRO, REPO / "config" / "config.yaml"], ids=["micro", "default"])
def test_parsing_the_workflow_never_imports_torch(tmp_path, config):
    """Every job (a SLURM job too) parses the Snakefile: that must not load torch. A torch that
    fails on import comes first on the path; the dry run still plans the whole DAG."""
    poison = tmp_path / "poison" / "torch"
    poison.mkdir(parents=True)
    (poison / "__init__.py").write_text("raise ImportError('torch was imported while parsing the workflow')\n")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(poison.parent), os.environ.get("PYTHONPATH")])),
    }
    result = snakemake(tmp_path / "run", "--dry-run", configfile=config, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"pretrain", "evaluate_model", "report_lp"} <= set(planned_jobs(result))


def test_bad_config_fails_before_any_job_and_names_the_key(tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["pretrain"]["epochs"] = 0
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile=bad)
    assert result.returncode != 0
    assert "config key 'pretrain.epochs'" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_workflow_passes_snakemake_lint(tmp_path):
    result = snakemake(tmp_path, "--lint")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


def test_micro_findings_have_every_finding_with_verdicts_from_per_point_files(micro_run):
    results = micro_run / "results" / "digits"
    table = pd.read_csv(results / "tables" / "findings.csv", keep_default_na=False)
    assert set(table["finding"]) == {"F1", "F2", "F3", "F4", "F5"}
    assert set(table["verdict"]) <= {"holds", "does not hold", "inconclusive", "not computed"}
    # every study's evaluation wrote per-point results, so every measured claim has an interval
    measured = table[table["verdict"] != "not computed"]
    # unpatching is a claim of identity (no image may differ), not of size: it has no interval
    sized = measured[~measured["claim"].str.startswith("unpatching")]
    assert len(sized) >= 20 and (sized["ci_low"] != "").all(), sized[sized["ci_low"] == ""]
    for path in ("soups/shifts", "rws/models/standard", "rws/patched/8levels", "distill/student-multihead"):
        assert (results / "seed-0" / "metrics" / f"{path}.points.tsv.gz").is_file(), path
    unpatch = table[table["claim"].str.startswith("unpatching")].iloc[0]
    assert unpatch["verdict"] == "holds"
    assert (results / "tables" / "findings.md").read_text().count("| F") == len(table)


def test_html_report_holds_every_table_and_figure(micro_run):
    done = snakemake(micro_run, "results/digits/tables/benchmarks.csv")
    assert done.returncode == 0, done.stderr[-3000:]
    benchmarks = pd.read_csv(micro_run / "results" / "digits" / "tables" / "benchmarks.csv")
    assert {"pretrain", "evaluate_model", "select_soups"} <= set(benchmarks["rule"])
    pretrain = benchmarks.set_index("rule").loc["pretrain"]
    assert pretrain["precision"] in ("float32", "bf16") and pretrain["memory_format"] in ("channels_last", "contiguous")
    assert pretrain["cpu_capability"] and 0 < pretrain["fixed_s_per_job"] < pretrain["total_s"]
    report = micro_run / "report.html"
    result = snakemake(micro_run, "--report", str(report))
    assert result.returncode == 0, result.stderr[-3000:]
    html = report.read_text(errors="replace")
    results = json.loads(re.search(r"var results = (\{.*?\});\n", html, re.S).group(1))
    categories = json.loads(re.search(r"var categories = (\{.*?\});\n", html, re.S).group(1))
    folder = "results/digits"  # the run cost and the findings; each study's pages are its seed's
    # Every table and figure is an HTML page (shown inline), listed under its study with one label
    pages = {
        "1. Robust fine-tuning": {"Tables": ["seed-0/tables/accuracy.html"]},
        "2. Model soups": {
            "Tables": ["seed-0/tables/soups_shifts.html"],
            "Figures": [
                "seed-0/figures/soup_line_linf_linf-l2.html",
                "seed-0/figures/soup_composition.html",
                "seed-0/figures/soup_ternary.html",
            ],
        },
        "3. Robust weight signatures": {
            "Tables": [f"seed-0/tables/rws_{name}.html" for name in ("table1", "table4", "oracle_free", "transfer")],
            "Figures": [f"seed-0/figures/rws_{name}.html" for name in ("lambda", "layer_norms", "compose")],
        },
        "4. Robust distillation": {
            "Tables": ["seed-0/tables/distill.html"],
            "Figures": ["seed-0/figures/distill.html"],
        },
        "5. Run cost": {"Tables": ["tables/benchmarks.html"]},
        "6. Findings": {"Tables": ["tables/findings.html"]},
    }
    for category, kinds in pages.items():
        for kind, paths in kinds.items():
            assert sorted(categories[category][kind]) == sorted(f"{folder}/{p}" for p in paths), (category, kind)
            for path in paths:
                page = results[f"{folder}/{path}"]
                assert page["mime_type"] == "text/html" and len(page["labels"]) == 1, path
                assert page["caption"] and page["data_uri"].startswith("data:text/html"), path
    assert results[f"{folder}/seed-0/figures/soup_line_linf_linf-l2.html"]["labels"] == {
        "result": "Soups on the line L∞ parent – L∞→L2 fine-tune"
    }
    # …and the first page opens each page in one click
    first_page = json.loads(re.search(r"var workflow_desc = (\".*?\");\n", html, re.S).group(1))
    opened = {
        unquote(path) for path in re.findall(r"javascript:app\.setView\(\{[^\"]*resultPath:'([^']+)'", first_page)
    }
    assert opened == {path for path, result in results.items() if result["mime_type"] != "text/csv"}
    # …and each table's CSV is a download beside its page; Markdown, PNG and PDF are not report items
    csv = sorted(categories["1. Robust fine-tuning"]["Tables (CSV download)"])
    assert csv == [f"{folder}/seed-0/tables/accuracy.csv"] and results[csv[0]]["mime_type"] == "text/csv"
    assert not [p for p in results if not p.endswith((".html", ".csv"))]


def test_a_config_given_on_the_command_line_stands_alone_and_is_written_resolved(tmp_path):
    """No layering on config/config.yaml: keys the file leaves out take the schema's defaults, the run
    writes results/<dataset>/config.resolved.yaml, and `robustsoup config FILE` prints exactly that."""
    from robustsoup.run_config import resolve_config

    sparse = tmp_path / "sparse.yaml"
    sparse.write_text("seed: 3\ndata: {n_adapt: 20, n_test: 40}\n")
    workdir = tmp_path / "run"
    result = snakemake(workdir, "results/digits/data/train.safetensors", configfile=sparse)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "extended by additional config" not in result.stdout + result.stderr
    written = (workdir / "results" / "digits" / "config.resolved.yaml").read_text()
    printed = subprocess.run(
        [str(Path(sys.executable).with_name("robustsoup")), "config", str(sparse)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert written == printed
    resolved = yaml.safe_load(written)
    digits_file = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    assert resolved["seed"] == 3 and resolved["data"]["n_test"] == 40
    # the digits file's value is not inherited; the schema's default is taken
    assert resolved["soups"]["search"]["step"] != digits_file["soups"]["search"]["step"]
    assert resolved["soups"]["search"]["step"] == resolve_config({})["soups"]["search"]["step"]
