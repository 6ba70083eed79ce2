"""A run's seeds (config key ``seeds``, robustsoup.seeds and robustsoup.report.seeds): the config, the layout,
the job's seed, and the tables as mean ± sd over hand-made seeds' tables and ledgers. Torch-free, seconds."""

from __future__ import annotations

import pandas as pd
import pytest

from robustsoup.config import ConfigError
from robustsoup.paths import RunPaths
from robustsoup.report.seeds import SD_SUFFIX, combine_tables, mean_sd, report_seeds, write_seed_table
from robustsoup.run_config import resolve_config
from robustsoup.seeds import fill_seed, for_seeds, job_seed

TWO = {"seeds": [0, 1], "rws": {"transfer": {"seed": 5}}}


def test_seed_is_the_single_seed_shorthand_and_disagreeing_keys_are_an_error():
    assert resolve_config({})["seeds"] == [0]
    assert resolve_config({"seed": 3})["seeds"] == [3]
    both = resolve_config({"seed": 2, "seeds": [2, 4]})
    assert both["seeds"] == [2, 4] and both["seed"] == 2
    assert resolve_config({"seeds": [4, 2]})["seed"] == 4  # the first seed prepares the shared data
    with pytest.raises(ConfigError, match=r"'seed' and 'seeds' disagree: seed is 1, seeds is \[0, 2\]"):
        resolve_config({"seed": 1, "seeds": [0, 2]})
    with pytest.raises(ConfigError, match="seeds"):
        resolve_config({"seeds": [0, 0]})
    # rws.transfer.seed trains other models: it must differ from every training seed, not only the first
    with pytest.raises(ConfigError, match=r"'rws.transfer.seed'.*seeds \[0, 1\]"):
        resolve_config({"seeds": [0, 1]})
    assert resolve_config(TWO)["seeds"] == [0, 1]


def test_each_seed_has_its_folder_and_the_data_are_shared():
    one, two = RunPaths(resolve_config({})), RunPaths(resolve_config(TWO))
    outputs = two.study_outputs()
    assert (
        "results/digits/seed-0/tables/accuracy.md" in outputs and "results/digits/seed-1/tables/accuracy.md" in outputs
    )
    assert "results/digits/tables/accuracy.md" in outputs and "results/digits/metrics/all.tsv" in outputs
    assert two.data == one.data and two.shift_dirs() == one.shift_dirs()
    assert not any("{seed}" in p for p in two.final_outputs())
    # one seed has the same layout: adding a seed adds folders, it moves no path
    assert set(one.final_outputs()) <= set(two.final_outputs())
    assert two.over_seeds.ledgers() == {s: f"results/digits/seed-{s}/metrics/all.tsv" for s in ("0", "1")}
    assert "accuracy" in two.over_seeds.names() and "rws_table1" in two.over_seeds.names()
    # the rerun keys carry the job's seed (Snakemake fills the wildcard into the string param)
    assert '"seed": "{seed}"' in two.rerun("pretrain") and '"seed": 0' in two.rerun("corrupt_split")


def test_a_job_runs_its_seed_with_its_params_filled_in():
    config = resolve_config(TWO)
    assert job_seed(config, {"seed": "1"})["seed"] == 1 and job_seed(config, {"split": "test"})["seed"] == 0
    with pytest.raises(ConfigError, match="seed 3"):
        job_seed(config, {"seed": "3"})
    params = {"m": {"a": "results/d/seed-{seed}/models/a.safetensors"}, "n": ["x/seed-{seed}"], "k": 3}
    assert fill_seed(params, "1") == {"m": {"a": "results/d/seed-1/models/a.safetensors"}, "n": ["x/seed-1"], "k": 3}
    assert for_seeds(["a/seed-{seed}/x", "data/y"], [0, 1]) == ["a/seed-0/x", "a/seed-1/x", "data/y"]


def test_mean_and_sd_read_as_the_values_do():
    assert mean_sd([81.25]) == "81.2" and mean_sd([0.25]) == "0.25"
    assert mean_sd([80.0, 82.0]) == "81.0 ± 1.4"  # sample sd (n − 1): √2
    assert mean_sd([0.5, 0.7]) == "0.6 ± 0.1"
    assert mean_sd([2, 2]) == "2 ± 0"  # an integer stays one
    assert mean_sd([]) == ""


def _table(values: dict, index=("linf", "linf-l2")) -> pd.DataFrame:
    return pd.DataFrame(values, index=pd.Index(list(index), name="model"))


def test_tables_combine_numbers_as_mean_and_sd_and_keep_agreeing_text():
    a = _table({"clean": [80.0, 90.0], "attack": ["apgd", "apgd"], "soup": ["s1", "s2"]})
    b = _table({"clean": [82.0, 90.0], "attack": ["apgd", "apgd"], "soup": ["s1", "s3"]})
    numbers, shown = combine_tables({"0": a, "1": b})
    assert numbers.loc["linf", "clean"] == 81.0 and numbers.loc["linf", "clean" + SD_SUFFIX] == pytest.approx(2**0.5)
    assert shown.loc["linf", "clean"] == "81.0 ± 1.4" and shown.loc["linf-l2", "clean"] == "90.0 ± 0.0"
    assert shown.loc["linf", "attack"] == "apgd" and shown.loc["linf", "soup"] == "s1"
    assert shown.loc["linf-l2", "soup"] == "seed 0: s2 · seed 1: s3"
    # one seed: the table's own values, no sd column
    numbers, shown = combine_tables({"0": a})
    assert numbers["clean"].tolist() == [80.0, 90.0] and list(numbers.columns) == ["clean", "attack", "soup"]
    # a row one seed lacks: the mean over the seeds that have it
    c = _table({"clean": [70.0], "attack": ["apgd"], "soup": ["s1"]}, index=("scratch",))
    numbers, _ = combine_tables({"0": a, "1": pd.concat([b, c])})
    assert numbers.loc["scratch", "clean"] == 70.0 and pd.isna(numbers.loc["scratch", "clean" + SD_SUFFIX])


def test_report_seeds_writes_the_ledger_and_each_table_over_the_seeds(tmp_path):
    ledgers, tables = {}, {}
    for seed, accuracy in (("0", 0.8), ("1", 0.9)):
        folder = tmp_path / f"seed-{seed}"
        (folder / "metrics").mkdir(parents=True)
        (folder / "tables").mkdir()
        rows = pd.DataFrame({"study": ["lp"], "model": ["linf"], "accuracy": [accuracy]})
        rows.to_csv(folder / "metrics/all.tsv", sep="\t", index=False)
        ledgers[seed] = str(folder / "metrics/all.tsv")
        _table({"clean": [100 * accuracy, 50.0]}).to_csv(folder / "tables/accuracy.csv")
        (folder / "tables/accuracy.md").write_text("# Accuracy on digits\n")
        tables[seed] = str(folder / "tables/accuracy.csv")
    out = {k: str(tmp_path / f"tables/accuracy.{k}") for k in ("csv", "md", "html")}
    report_seeds(ledgers, str(tmp_path / "metrics/all.tsv"), {"accuracy": tables}, {"accuracy": out})
    ledger = pd.read_csv(tmp_path / "metrics/all.tsv", sep="\t")
    assert ledger["seed"].tolist() == [0, 1] and ledger["accuracy"].tolist() == [0.8, 0.9]
    md = (tmp_path / "tables/accuracy.md").read_text()
    assert md.startswith("# Accuracy on digits (mean ± sd, 2 seeds)") and "| linf | 85.0 ± 7.1 |" in md
    assert "n − 1" in md and "85.0 ± 7.1" in (tmp_path / "tables/accuracy.html").read_text()
    csv = pd.read_csv(out["csv"], index_col=0)
    assert csv.loc["linf", "clean"] == 85.0 and csv.loc["linf-l2", "clean" + SD_SUFFIX] == 0.0


def test_a_label_on_several_rows_matches_row_by_row(tmp_path):
    paths = {}
    for seed, values in (("0", [70.0, 80.0]), ("1", [72.0, 84.0])):
        table = pd.DataFrame({"model": ["student", "student"], "mode": ["ours", "oracle"], "clean": values})
        paths[seed] = tmp_path / f"{seed}.csv"
        table.set_index("model").to_csv(paths[seed])
    out = {k: str(tmp_path / f"distill.{k}") for k in ("csv", "md", "html")}
    numbers = write_seed_table("distill", paths, out)
    assert numbers.index.tolist() == ["student", "student"] and numbers["clean"].tolist() == [71.0, 82.0]
    assert "| student | ours | 71.0 ± 1.4 |" in (tmp_path / "distill.md").read_text()


def test_a_seed_job_sees_its_params_maps_filled_in_on_snakemakes_own_script_object():
    """Snakemake fills the wildcard into string and list params only; a script's Snakemake object rebuilds
    ``params`` on every access, so the job fills the ``{name: path}`` maps where they are stored."""
    from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params, ResourceList, Snakemake, Wildcards

    from robustsoup.snakemake_job import _fill_params

    params = Params(fromdict={"models": {"linf": "results/d/seed-{seed}/models/linf.safetensors"}, "k": 2})
    job = Snakemake(
        InputFiles(), OutputFiles(), params, Wildcards(fromdict={"seed": "1"}), 1, ResourceList(), Log(), {}, "x", None
    )
    _fill_params(job)
    assert job.params.models == {"linf": "results/d/seed-1/models/linf.safetensors"} and job.params.k == 2
