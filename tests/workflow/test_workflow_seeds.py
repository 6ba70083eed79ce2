"""The micro config with seeds: [0, 1] through the whole workflow (issue 23): each seed's run in its folder,
the data prepared once, every table as mean ± sd over the two seeds, and findings that read both. Slow (two
micro runs' jobs): CI only."""

from __future__ import annotations

import subprocess

import pandas as pd
import pytest
import yaml

from conftest import REPO
from snakemake_output import job_stats, snakemake_command

pytestmark = [pytest.mark.workflow, pytest.mark.ci]
MICRO = REPO / "tests" / "configs" / "micro.yaml"


def test_two_seeds_run_every_study_twice_on_the_shared_data_and_report_mean_and_sd(tmp_path):
    config = yaml.safe_load(MICRO.read_text())
    config["seeds"] = [0, 1]
    config["rws"]["transfer"]["seed"] = 7  # the transfer targets: another seed than both training seeds
    path = tmp_path / "seeds.yaml"
    path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    result = subprocess.run(
        snakemake_command(workdir, path, "--cores", "2"), capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    jobs = job_stats(result.stdout + result.stderr)
    assert jobs["prepare_data"] == 1 and jobs["corrupt_split"] == 2  # the data once
    assert jobs["pretrain"] == 2 and jobs["report_lp"] == 2 and jobs["report_seeds"] == 1  # the studies per seed
    results = workdir / "results" / "digits"
    seeds = {s: pd.read_csv(results / f"seed-{s}" / "metrics" / "all.tsv", sep="\t") for s in (0, 1)}
    ledger = pd.read_csv(results / "metrics" / "all.tsv", sep="\t")
    assert sorted(set(ledger["seed"])) == [0, 1] and len(ledger) == sum(len(rows) for rows in seeds.values())
    # every seed's table as mean ± sd, the numbers those of the seeds' tables
    table = (results / "tables" / "accuracy.md").read_text()
    assert "(mean ± sd, 2 seeds)" in table and " ± " in table
    accuracy = {s: pd.read_csv(results / f"seed-{s}" / "tables" / "accuracy.csv", index_col=0) for s in (0, 1)}
    combined = pd.read_csv(results / "tables" / "accuracy.csv", index_col=0)
    column = accuracy[0].select_dtypes("number").columns[0]
    mean = (accuracy[0][column] + accuracy[1][column]) / 2
    assert combined[column].to_numpy() == pytest.approx(mean.to_numpy(), abs=1e-4)
    assert f"{column} (sd)" in combined.columns
    for name in ("soups_shifts", "rws_table1", "distill"):
        assert (results / "tables" / f"{name}.md").read_text().startswith("# "), name
    # the findings use both seeds
    findings = pd.read_csv(results / "tables" / "findings.csv", keep_default_na=False)
    measured = findings[findings["verdict"] != "not computed"]
    # every claim pairs the seeds: a claim's text names no seed-specific model (the best soup of a line, a seed's
    # best base model are in 'ours')
    assert len(measured) >= 10 and (measured["seeds"] == "0, 1").all(), measured[["claim", "seeds"]]
    sized = measured[(measured["ci_low"] != "") & (measured["seeds"] == "0, 1")]
    assert len(sized) and sized["note"].str.contains("effect per seed").all()
    assert "draws the seeds with replacement" in (results / "tables" / "findings.md").read_text()
