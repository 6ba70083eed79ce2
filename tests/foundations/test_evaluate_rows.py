"""Rows counted from per-point files: clean accuracy on the attacked images next to the whole split's, and union."""

import pandas as pd
import pytest
import torch

from robustsoup.evaluate.adversarial import union_rows
from robustsoup.evaluate.rows import CLEAN_ON_ATTACKED, METRIC_COLUMNS, metric_row, write_metrics
from robustsoup.points import write_points

# Ten test images; the attacks saw the first four.
LABELS = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3]
CLEAN = [1, 1, 0, 1, 1, 1, 1, 1, 1, 1]  # 9/10 on the split, 3/4 on the attacked images
ROBUST = {"Linf": [1, 0, 0, 1], "L2": [1, 1, 0, 0]}  # union: image 0 only


def _points(correct: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"index": range(len(correct)), "label": LABELS[: len(correct)], "correct": correct})


def _attacks() -> dict[str, str]:
    return {"Linf": "apgd-ce(20it×1)", "L2": "apgd-ce(20it×1)"}


def test_clean_accuracy_on_the_attacked_images_and_union_are_counted_from_the_points():
    points = {"none": _points(CLEAN), **{norm: _points(c) for norm, c in ROBUST.items()}}
    rows = union_rows("m", "test", points, _attacks()).set_index("threat")
    assert list(rows.index) == [CLEAN_ON_ATTACKED, "union"]
    subset = rows.loc[CLEAN_ON_ATTACKED]
    assert (subset["n"], subset["correct"], subset["accuracy"], subset["attack"]) == (4, 3, 0.75, "clean")
    union = rows.loc["union"]
    assert (union["n"], union["correct"], union["attack"]) == (4, 1, "apgd-ce(20it×1)")


def test_one_norm_gives_the_clean_row_on_its_images_and_no_union():
    rows = union_rows("m", "test", {"none": _points(CLEAN), "L1": _points([0, 1, 1])}, {"L1": "a"})
    assert list(rows["threat"]) == [CLEAN_ON_ATTACKED]
    assert (rows["n"].item(), rows["correct"].item()) == (3, 2)
    assert union_rows("m", "test", {"none": _points(CLEAN)}, {}).empty


@pytest.mark.parametrize("column", ["index", "label"])
def test_points_of_other_images_are_refused(column):
    other = _points(ROBUST["L2"])
    other.loc[1, column] += 1
    points = {"none": _points(CLEAN), "Linf": _points(ROBUST["Linf"]), "L2": other}
    with pytest.raises(ValueError, match=f"column '{column}' differs"):
        union_rows("m", "test", points, _attacks())


def _write_model(folder, model: str, clean: list[int], robust: dict[str, list[int]]) -> None:
    """The files rule evaluate_model writes: one row file and one per-point file per threat."""
    folder.mkdir(parents=True)
    frames = {"clean": (metric_row(model, "test", torch.tensor(clean).bool()), _points(clean))}
    for norm, correct in robust.items():
        row = metric_row(model, "test", torch.tensor(correct).bool(), threat=norm, eps=0.1, attack="apgd-ce(20it×1)")
        frames[norm] = (row, _points(correct))
    for threat, (row, points) in frames.items():
        write_metrics(pd.DataFrame([row], columns=METRIC_COLUMNS), folder / f"{threat}.tsv")
        write_points(points, folder / f"{threat}.points.tsv")


def test_the_accuracy_table_shows_clean_on_the_split_and_on_the_attacked_images(tmp_path):
    from robustsoup.lp.report import accuracy_table
    from robustsoup.lp.stages import gather_metrics

    metrics_dir = tmp_path / "metrics"
    _write_model(metrics_dir / "linf" / "test", "linf", CLEAN, ROBUST)
    _write_model(metrics_dir / "linf-l2" / "test", "linf-l2", [0] * 5 + [1] * 5, {"Linf": [0] * 4, "L2": [0] * 4})
    config = {"evaluate": {"threats": ["Linf", "L2"]}}
    gathered = gather_metrics(config, ["linf", "linf-l2"], metrics_dir, tmp_path / "all.tsv")
    assert set(gathered["threat"]) == {"none", CLEAN_ON_ATTACKED, "Linf", "L2", "union"}
    assert (pd.read_csv(tmp_path / "all.tsv", sep="\t")["threat"] == CLEAN_ON_ATTACKED).sum() == 2

    table = accuracy_table(gathered, ["linf", "linf-l2"])
    # the norms named as the figures name them, with their ε
    assert list(table.columns) == ["weights", "clean (all N)", "clean (attacked n)", "L∞, ε=0.1", "L2, ε=0.1", "union"]
    assert table.loc["linf"].drop("weights").tolist() == [90.0, 75.0, 50.0, 50.0, 25.0]
    assert table.loc["linf-l2"].drop("weights").tolist() == [50.0, 0.0, 0.0, 0.0, 0.0]


def test_the_accuracy_table_of_rows_without_the_attacked_clean_row_keeps_the_split_column():
    from robustsoup.lp.report import accuracy_table

    rows = pd.DataFrame(
        [metric_row("linf", "test", torch.tensor(CLEAN).bool())]
        + [
            metric_row("linf", "test", torch.tensor(c).bool(), threat=n, eps=0.1, attack="a") for n, c in ROBUST.items()
        ],
        columns=METRIC_COLUMNS,
    )
    assert list(accuracy_table(rows, ["linf"]).columns) == ["weights", "clean (all N)", "L∞, ε=0.1", "L2, ε=0.1"]
