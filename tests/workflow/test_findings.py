"""The findings table (issue 23): paired bootstrap verdicts over a hand-built results folder, the same table
from ``robustsoup findings``, and a verdict that follows an edit of metrics/all.tsv. Torch-free, seconds."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml

from robustsoup.cli import main
from robustsoup.config import config_yaml
from robustsoup.findings import findings_table, report_findings
from robustsoup.paths import RunPaths
from robustsoup.points import POINT_KEYS, keyed_points, points_frame, read_keyed_points, write_keyed_points
from robustsoup.report.findings import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_COMPUTED,
    Term,
    bootstrap,
    findings_rows,
    measured_claim,
)
from robustsoup.run_config import resolve_config

from conftest import REPO

N = 200
LEVELS = {  # accuracy each hand-built model gets right, per kind of measurement
    "linf": 0.5,
    "linf-l2": 0.8,
    "linf-l1": 0.8,
    "linf-nominal": 0.8,
    "scratch-l2": 0.82,
    "soup-linf_0.5-linf-l2_0.5": 0.9,
}


def _correct(rng, p: float, base: np.ndarray) -> np.ndarray:
    """Correctness at accuracy ≈ ``p`` that shares most of its images with ``base`` (models agree on easy ones)."""
    order = np.argsort(base + 0.1 * rng.random(len(base)))
    out = np.zeros(len(base), dtype=int)
    out[order[len(base) - int(round(p * len(base))) :]] = 1
    return out


def _row(study, model, evalset, correct, corruption="none", severity=0, threat="none", attack="clean") -> dict:
    return {
        "study": study,
        "model": model,
        "evalset": evalset,
        "corruption": corruption,
        "severity": severity,
        "threat": threat,
        "eps": 0.0,
        "attack": attack,
        "n": len(correct),
        "correct": int(correct.sum()),
        "accuracy": correct.mean(),
    }


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return hand_built(tmp_path)


def hand_built(tmp_path, seed: int = 0, seeds: list[int] | None = None):
    """results/digits of the micro config (at ``seed``, or at each of ``seeds``), written by hand: every seed's
    folder with every study's rows and per-point files."""
    micro = yaml.safe_load((REPO / "tests/configs/micro.yaml").read_text())
    raw = {**micro, "seed": seed}
    if seeds is not None:
        raw = {**micro, "seeds": seeds, "rws": {**micro["rws"], "transfer": {**micro["rws"]["transfer"], "seed": 9}}}
    config = resolve_config(raw)
    root = tmp_path / RunPaths(config).root
    root.mkdir(parents=True)
    (root / "config.resolved.yaml").write_text(config_yaml(config))
    for s in config["seeds"]:
        _seed_folder(tmp_path, config, s)
    return root


def _seed_folder(tmp_path, config: dict, seed: int) -> None:
    run = RunPaths(config, seed)
    folder = tmp_path / run.results
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    base = rng.random(N)
    rows, keyed = [], {}

    def keep(path, row, correct):
        keyed.setdefault(path, []).append(keyed_points(row, np.zeros(len(correct), int), correct))
        rows.append(row)

    for model in run.all_models:
        union = np.ones(N, dtype=int)
        for threat in ["none", "Linf", "L2", "L1"]:
            level = LEVELS[model] if threat in ("L2", "none") else 0.4
            correct = _correct(rng, level, base)
            union &= correct
            path = run.evaluation_points()[(model, threat)]
            (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
            points_frame(np.zeros(N, int), correct).to_csv(tmp_path / path, sep="\t", index=False)
            rows.append(
                _row("lp", model, "test", correct, threat=threat, attack="apgd-ce" if threat != "none" else "clean")
            )
        rows.append(_row("lp", model, "test", union, threat="union"))
    evalsets = {"clean": [("none", 0)], "noise": [("gaussian_noise", 3)], "weather": [("fog", 3)]}
    shift_models = {"linf": 0.5, "linf-l2": 0.5, "linf-l1": 0.5, "linf-nominal": 0.6, "soup-single": 0.6}
    shift_models["ensemble-linf+linf-l2+linf-l1+linf-nominal"] = 0.6
    for evalset, units in evalsets.items():
        for corruption, severity in units:
            for model, level in {**shift_models, f"soup-{evalset}-grid-k20": 0.9}.items():
                correct = _correct(rng, level, base)
                keep(run.soups_points(), _row("soups-shifts", model, evalset, correct, corruption, severity), correct)
    clean = {}
    for model, level in (("standard", 0.5), ("augment", 0.55)):
        clean[model] = _correct(rng, 0.9 if model == "standard" else 0.85, base)
        keep(run.rws.points("models", model), _row("rws", model, "test", clean[model]), clean[model])
        for corruption in config["rws"]["corruptions"]:
            correct = _correct(rng, level, base)
            keep(run.rws.points("models", model), _row("rws", model, "test", correct, corruption, 3), correct)
    standard_clean = clean["standard"]
    for corruption in config["rws"]["corruptions"]:
        name = f"rws-{corruption}-8levels"
        correct = _correct(rng, 0.85, base)
        keep(run.rws.points("patched", "8levels"), _row("rws", name, "test", correct, corruption, 3), correct)
        keep(run.rws.points("patched", "8levels"), _row("rws", f"{name}-off", "test", standard_clean), standard_clean)
    for model, clean, shifted in (
        ("teacher", 0.8, 0.75),
        ("student", 0.9, 0.5),
        ("student-finetuned", 0.9, 0.7),
        ("student-multihead", 0.9, 0.72),
    ):
        path = f"{run.results}/metrics/distill/{model}{run.distill.POINTS}"
        correct = _correct(rng, clean, base)
        keep(path, _row("distill", model, "test", correct), correct)
        for corruption in config["data"]["corruptions"]:
            correct = _correct(rng, shifted, base)
            keep(path, _row("distill", model, "test", correct, corruption, 3), correct)
    for path, frames in keyed.items():
        write_keyed_points(frames, tmp_path / path)
    pd.DataFrame(rows).to_csv(folder / "metrics/all.tsv", sep="\t", index=False)
    for name, cost in (("linf-l2", 2), ("scratch-l2", 10)):
        path = tmp_path / run.model(name, ".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"training": {"cost": cost}}))


def test_the_findings_of_a_run_have_every_finding_with_verdicts(results):
    table = findings_table(results)
    assert set(table["finding"]) == {"F1", "F2", "F3", "F4", "F5"}
    assert set(table["verdict"]) <= {HOLDS, FAILS, INCONCLUSIVE, NOT_COMPUTED}
    beats_parent = table[table["claim"].str.startswith("linf-l2 (1 ep) beats the parent")].iloc[0]
    assert beats_parent["verdict"] == HOLDS and beats_parent["effect"] == pytest.approx(30.0)
    assert beats_parent["ci_low"] < 30.0 < beats_parent["ci_high"]
    recovered = table[table["claim"].str.contains("recovers")]
    assert "cost 2/10 = 0.20×" in recovered.iloc[0]["ours"]
    # no reference for L1 or nominal in the micro config: said, not dropped
    assert (table[table["claim"].str.contains("recovers")]["verdict"] == NOT_COMPUTED).sum() == 2
    assert table[table["claim"].str.contains("extrapolating")]["verdict"].iloc[0] == NOT_COMPUTED
    f3 = table[table["finding"] == "F3"]
    p3 = f3[f3["claim"].str.startswith("precondition P3")]
    # every base model at 0.5 on each shift but linf-nominal at 0.6: no shift has a better base model than it
    assert len(p3) == 1 and p3.iloc[0]["verdict"] == FAILS and p3.iloc[0]["effect"] == pytest.approx(-10, abs=6)
    comparisons = f3.drop(p3.index)
    assert len(comparisons) == 3 * 4 and (comparisons["verdict"] == HOLDS).all()
    p5 = table[table["claim"].str.startswith("precondition P5")].iloc[0]
    assert p5["verdict"] == HOLDS and p5["effect"] == pytest.approx(25, abs=8)  # teacher 0.75 vs student 0.5
    unpatch = table[table["claim"].str.startswith("unpatching")].iloc[0]
    assert unpatch["verdict"] == HOLDS
    within = table[table["claim"].str.contains("matches full fine-tuning")].iloc[0]
    assert within["threshold"] == -1.0 and within["verdict"] in (HOLDS, INCONCLUSIVE)
    config = resolve_config(yaml.safe_load((results / "config.resolved.yaml").read_text()))
    tables = results / "tables"
    report_findings(config, tables / "findings.csv", tables / "findings.md", tables / "findings.html")
    assert pd.read_csv(tables / "findings.csv")["verdict"].tolist() == table["verdict"].tolist()
    assert "| F5 |" in (tables / "findings.md").read_text()
    assert "Thresholds" in (tables / "findings.html").read_text()


def test_the_command_line_prints_the_table_and_follows_an_edit_of_the_ledger(results, capsys):
    assert main(["findings", str(results), "--csv"]) == 0
    printed = capsys.readouterr().out
    assert printed == findings_table(results).to_csv(index=False)
    before = pd.read_csv(io.StringIO(printed))
    claim = "linf-l2 (1 ep) beats the parent linf in L2 accuracy"
    assert before.set_index("claim").loc[claim, "verdict"] == HOLDS
    ledger = pd.read_csv(results / "seed-0/metrics/all.tsv", sep="\t")
    edited = (ledger["model"] == "linf-l2") & (ledger["threat"] == "L2")
    ledger.loc[edited, "accuracy"] = 0.2  # merged from a worse run
    ledger.to_csv(results / "seed-0/metrics/all.tsv", sep="\t", index=False)
    assert main(["findings", str(results), "--csv"]) == 0
    after = pd.read_csv(io.StringIO(capsys.readouterr().out)).set_index("claim")
    assert after.loc[claim, "verdict"] == FAILS
    assert after.loc[claim, "effect"] == pytest.approx(-30.0)
    assert "differs from the per-point files" in after.loc[claim, "note"]
    pd.concat([ledger, ledger[edited].assign(accuracy=0.7)]).to_csv(
        results / "seed-0/metrics/all.tsv", sep="\t", index=False
    )
    assert main(["findings", str(results)]) == 2
    assert "different accuracies of linf-l2 on test" in capsys.readouterr().err


def test_a_missing_results_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["findings", str(tmp_path)]) == 2
    assert "config.resolved.yaml" in capsys.readouterr().err


def test_a_disabled_study_says_so(results):
    config = yaml.safe_load((results / "config.resolved.yaml").read_text())
    config["rws"]["enabled"] = config["distill"]["enabled"] = False
    table = findings_table(results, resolve_config(config))
    for finding in ("F4", "F5"):
        rows = table[table["finding"] == finding]
        assert len(rows) >= 3 and (rows["verdict"] == NOT_COMPUTED).all()
        assert rows["note"].str.contains("disabled").all()


def test_the_paired_bootstrap_covers_the_difference_and_pairing_narrows_it():
    rng = np.random.default_rng(1)
    a = (rng.random(400) < 0.6).astype(int)
    b = a.copy()
    b[rng.choice(np.flatnonzero(a), 20, replace=False)] = 0  # b loses 20 of a's images: 5 points
    paired = bootstrap([Term(1.0, a.mean(), a), Term(-1.0, b.mean(), b)])
    assert np.percentile(paired, 2.5) > 0 and abs(np.median(paired) - 5.0) < 1.0
    unpaired = bootstrap([Term(1.0, a.mean(), a, "one"), Term(-1.0, b.mean(), b, "two")])
    assert np.std(unpaired) > 3 * np.std(paired)
    same = measured_claim("F0", "a model beats itself", [Term(1.0, a.mean(), a), Term(-1.0, a.mean(), a)])
    no_points = measured_claim("F0", "no points", [Term(1.0, 0.9, None, label="x"), Term(-1.0, 0.1, b, label="y")])
    same_row, no_points_row = findings_rows({"0": [same, no_points]})
    assert same_row["effect"] == 0 and same_row["verdict"] == INCONCLUSIVE
    assert no_points_row["verdict"] == INCONCLUSIVE and "no per-point results for x" in no_points_row["note"]


def test_several_seeds_average_the_effect_and_widen_the_interval_by_their_spread(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one, two = hand_built(tmp_path / "a", 0), hand_built(tmp_path / "b", 2)  # rws.transfer.seed is 1
    ledger = pd.read_csv(two / "seed-2/metrics/all.tsv", sep="\t")
    ledger.loc[(ledger["model"] == "linf-l2") & (ledger["threat"] == "L2"), "accuracy"] = 0.6  # seed 2 gains less
    ledger.to_csv(two / "seed-2/metrics/all.tsv", sep="\t", index=False)
    claim = "linf-l2 (1 ep) beats the parent linf in L2 accuracy"
    single = findings_table(one).set_index("claim").loc[claim]
    both = findings_table([one, two]).set_index("claim").loc[claim]
    assert both["seeds"] == "0, 2" and both["effect"] == pytest.approx((30.0 + 10.0) / 2)
    assert both["ci_high"] - both["ci_low"] > single["ci_high"] - single["ci_low"]
    assert "effect per seed +30.0, +10.0" in both["note"]
    with pytest.raises(ValueError, match="two results folders of seed 0"):
        findings_table([one, one])


def test_a_run_of_two_seeds_combines_its_seed_folders(tmp_path, monkeypatch):
    """seeds: [0, 1] in one run: the findings read both seed folders; the effect is their mean and the interval
    (seeds resampled, then test points) is wider than one seed's."""
    monkeypatch.chdir(tmp_path)
    run = hand_built(tmp_path / "run", seeds=[0, 1])
    ledger = pd.read_csv(run / "seed-1/metrics/all.tsv", sep="\t")
    ledger.loc[(ledger["model"] == "linf-l2") & (ledger["threat"] == "L2"), "accuracy"] = 0.6  # seed 1 gains less
    ledger.to_csv(run / "seed-1/metrics/all.tsv", sep="\t", index=False)
    claim = "linf-l2 (1 ep) beats the parent linf in L2 accuracy"
    both = findings_table(run).set_index("claim").loc[claim]
    single = findings_table(hand_built(tmp_path / "one", 0)).set_index("claim").loc[claim]
    assert both["seeds"] == "0, 1" and both["effect"] == pytest.approx((30.0 + 10.0) / 2)
    assert both["ci_high"] - both["ci_low"] > single["ci_high"] - single["ci_low"]
    assert "effect per seed +30.0, +10.0" in both["note"]


def test_keyed_per_point_files_round_trip(tmp_path):
    row = {"model": "m", "evalset": "noise", "corruption": "fog", "severity": 3, "threat": "none"}
    frame = keyed_points(row, [1, 2, 3], [True, False, True])
    write_keyed_points([frame], tmp_path / "p.points.tsv.gz")
    back = read_keyed_points(tmp_path / "p.points.tsv.gz")
    assert list(back.columns) == [*POINT_KEYS, "index", "label", "correct"]
    assert back["correct"].tolist() == [1, 0, 1] and back["severity"].tolist() == [3, 3, 3]
