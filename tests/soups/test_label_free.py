"""Label-free soup selection (issue 18): the methods, the safety signal, the stage rows, the table, soup-for."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch

from robustsoup.checkpoint import load_checkpoint, save_checkpoint
from robustsoup.soups.choice import LabelFreeChoice, choose_without_labels, pick_disagreement
from robustsoup.soups.grid import simplex_grid
from robustsoup.soups.search import (
    LABEL_FREE_METHODS,
    SELECTION_METHODS,
    SoupScorer,
    SoupStatistics,
    select_from_table,
    soup_statistics,
)
from robustsoup.weights import affine_combination

from conftest import tiny_meta
from data_fixtures import write_png

BASE = ["linf", "linf-l2", "linf-l1", "linf-nominal"]


def _family(trained_model, n: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    """``n`` related models: the trained one and copies with weights perturbed by growing noise."""
    generator = torch.Generator().manual_seed(seed)
    parent = trained_model.state_dict()
    states = [{k: v.clone() for k, v in parent.items()}]
    for i in range(1, n):
        states.append(
            {
                k: v + 0.15 * i * v.std() * torch.randn(v.shape, generator=generator)
                if v.is_floating_point() and v.ndim > 1
                else v.clone()
                for k, v in parent.items()
            }
        )
    return states


def _scorer(states, names, **kwargs) -> SoupScorer:
    return SoupScorer(tiny_meta(width=8).build(), states, names, **kwargs)


# --- the methods on a score table --------------------------------------------------------------

TABLE = {  # five soups; every method's best is a different soup
    "entropy": [0.9, 0.2, 0.5, 0.6, 0.7],
    "marginal_entropy": [2.0, 0.3, 0.6, 2.2, 0.7],
    "agreement": [0.5, 0.6, 0.95, 0.7, 0.8],
    "bn_distance": [0.4, 0.3, 0.5, 0.6, 0.05],
    "accuracy": [0.1, 0.2, 0.3, 0.4, 0.5],
}
EXPECTED = {"entropy": 1, "agreement": 2, "bn_distance": 4, "infomax": 3}


def test_each_label_free_method_returns_the_argmax_of_its_score_on_a_table():
    grid = [{"a": w, "b": round(1 - w, 2)} for w in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert set(EXPECTED) == set(LABEL_FREE_METHODS)
    for method, expected in EXPECTED.items():
        selection = select_from_table(method, grid, TABLE, forward_passes=7)
        scores = LABEL_FREE_METHODS[method].score(TABLE)
        assert selection.details["index"] == int(np.argmax(scores)) == expected
        assert selection.weights == grid[expected] and selection.method == method
        assert selection.forward_passes == 7
        assert selection.adaptation_accuracy == TABLE["accuracy"][expected]  # a diagnostic only
    # the scores are what the docstrings say: lower entropy / distance is better, SHOT's IM = H(p̄) − E[H(p)]
    assert LABEL_FREE_METHODS["infomax"].score(TABLE)[3] == pytest.approx(2.2 - 0.6)
    assert LABEL_FREE_METHODS["entropy"].score(TABLE)[1] == -0.2
    # ties go to the first soup, as for grid search
    tied = {**TABLE, "entropy": [0.3, 0.3, 0.9, 0.9, 0.9]}
    assert select_from_table("entropy", grid, tied).details["index"] == 0
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        select_from_table("bn_distance", grid, {**TABLE, "bn_distance": [math.nan] * 5})
    with pytest.raises(ValueError, match="expected one of"):
        select_from_table("oracle", grid, TABLE)
    assert {"entropy", "agreement", "bn_distance", "infomax", "grid"} <= set(SELECTION_METHODS)


def test_entropy_selection_picks_the_lower_entropy_soup(trained_model, digits_splits):
    """Two models that predict the same classes, one with logits shrunk 10×: its predictions are
    flatter, so entropy must choose the other, and the table's entropies are the true ones."""
    sharp = trained_model.state_dict()
    flat = {k: v.clone() for k, v in sharp.items()}
    head = [k for k in flat if k.endswith(("weight", "bias")) and flat[k].ndim <= 2][-2:]  # the linear layer
    for key in head:
        flat[key] = flat[key] * 0.1
    scorer = _scorer([flat, sharp], ["flat", "sharp"])
    images = digits_splits["adapt"].images[:64]
    inputs = scorer.prepare(images)
    grid = [{"flat": 1.0 - w, "sharp": w} for w in (0.0, 0.5, 1.0)]
    selection = SELECTION_METHODS["entropy"](scorer, grid, inputs)
    assert selection.weights == {"flat": 0.0, "sharp": 1.0}
    assert selection.forward_passes == len(grid) * len(images)
    statistics = soup_statistics(scorer, grid, inputs)
    for weights, entropy in zip(grid, statistics.table["entropy"]):
        model = tiny_meta(width=8).build().eval()
        model.load_state_dict(affine_combination([flat, sharp], [weights["flat"], weights["sharp"]]))
        with torch.no_grad():
            probs = model(images.float() / 255).softmax(1)
        assert entropy == pytest.approx(float(-(probs * probs.log()).sum(1).mean()), rel=1e-4)
    assert statistics.table["entropy"][2] < statistics.table["entropy"][0]


def test_bn_distance_prefers_the_soup_whose_statistics_match_the_shift(trained_model, digits_splits):
    """A copy of the model with its BatchNorm statistics re-estimated on the shifted images has
    (almost) no distance to them; the original, fitted to clean digits, is far from them."""
    images = (digits_splits["adapt"].images.float() * 0.3 + 120).to(torch.uint8)  # low contrast
    adapted = tiny_meta(width=8).build()
    adapted.load_state_dict(trained_model.state_dict())
    for module in adapted.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average: one batch gives its own statistics
    adapted.train()
    with torch.no_grad():
        adapted(images.float() / 255)
    scorer = _scorer([trained_model.state_dict(), adapted.state_dict()], ["clean", "adapted"])
    grid = [{"clean": 1.0, "adapted": 0.0}, {"clean": 0.0, "adapted": 1.0}]
    statistics = soup_statistics(scorer, grid, scorer.prepare(images))
    clean, matched = statistics.table["bn_distance"]
    assert matched < 0.05 < clean
    assert select_from_table("bn_distance", grid, statistics.table).weights == grid[1]
    # the statistics merged over many small batches are those of the whole set
    states = [trained_model.state_dict(), adapted.state_dict()]
    batched = soup_statistics(_scorer(states, ["clean", "adapted"], batch_size=7), grid, scorer.prepare(images))
    assert batched.table["bn_distance"] == pytest.approx(statistics.table["bn_distance"], rel=1e-5)


def test_agreement_is_with_the_output_ensemble_of_the_base_models(trained_model, digits_splits):
    states = _family(trained_model, 3)
    names = ["a", "b", "c"]
    scorer = _scorer(states, names)
    images = digits_splits["adapt"].images[:50]
    inputs = scorer.prepare(images)
    models = []
    for state in states:
        model = tiny_meta(width=8).build().eval()
        model.load_state_dict(state)
        models.append(model)
    with torch.no_grad():
        ensemble = torch.stack([m(images.float() / 255).softmax(1) for m in models]).mean(0).argmax(1)
        own = [m(images.float() / 255).argmax(1) for m in models]
    grid = [dict(zip(names, w)) for w in simplex_grid(3, 0.5)]
    statistics = soup_statistics(scorer, grid, inputs)
    assert statistics.ensemble_passes == 0  # the base models are corners of the simplex
    for i, name in enumerate(names):
        corner = next(j for j, w in enumerate(grid) if w[name] == 1.0)
        assert statistics.table["agreement"][corner] == pytest.approx(float((own[i] == ensemble).float().mean()))
    # without the corners in the grid, the ensemble costs one pass per base model
    interior = [w for w in grid if max(w.values()) < 1]
    inner = soup_statistics(scorer, interior, inputs, batchnorm=False)
    assert inner.ensemble_passes == 3 * len(images) and inner.soup_passes == len(interior) * len(images)
    assert math.isnan(inner.table["bn_distance"][0])
    selection = SELECTION_METHODS["agreement"](scorer, interior, inputs)
    assert selection.forward_passes == (len(interior) + 3) * len(images)


# --- the safety signal ---------------------------------------------------------------------------


def _statistics(predictions: list[list[int]]) -> SoupStatistics:
    table = {key: list(values[: len(predictions)]) for key, values in TABLE.items()}
    n = len(predictions[0])
    return SoupStatistics(table, torch.tensor(predictions), n, len(predictions) * n, 0)


def test_fallback_fires_when_the_methods_disagree_beyond_the_threshold():
    # soups 1 (entropy's pick) and 2 (agreement's) predict differently on 3 of 10 images
    predictions = [[0] * 10, [0] * 10, [1, 1, 1] + [0] * 7, [0] * 10, [0] * 10]
    statistics = _statistics(predictions)
    grid = [{"a": float(i)} for i in range(5)]
    methods = ["entropy", "agreement"]
    selections = {m: select_from_table(m, grid, statistics.table) for m in methods}
    picks = {m: s.details["index"] for m, s in selections.items()}
    assert picks == {"entropy": 1, "agreement": 2}
    disagreement = pick_disagreement(statistics, picks)
    assert disagreement == {"entropy": pytest.approx(0.3), "agreement": pytest.approx(0.3)}
    assert LabelFreeChoice(selections, disagreement, 0.25, statistics).fallback("entropy")
    assert not LabelFreeChoice(selections, disagreement, 0.3, statistics).fallback("entropy")
    # with a third method agreeing with entropy's soup, entropy's pick is more trusted than agreement's
    picks["bn_distance"] = 4
    disagreement = pick_disagreement(statistics, picks)
    assert disagreement["entropy"] == pytest.approx(0.15) and disagreement["agreement"] == pytest.approx(0.3)
    choice = LabelFreeChoice(selections, disagreement, 0.2, statistics)
    assert not choice.fallback("entropy") and choice.fallback("agreement")
    # the median over the others: one outlying pick flags itself, not the three that agree
    picks["infomax"] = 0
    disagreement = pick_disagreement(statistics, picks)
    assert disagreement["entropy"] == 0.0 and disagreement["agreement"] == pytest.approx(0.3)
    choice = LabelFreeChoice(selections, disagreement, 0.05, statistics)
    assert not choice.fallback("entropy") and choice.fallback("agreement")
    # one method alone has nothing to disagree with: no signal, no fallback
    alone = pick_disagreement(statistics, {"entropy": 1})
    assert math.isnan(alone["entropy"])
    assert not LabelFreeChoice({"entropy": selections["entropy"]}, alone, 0.0, statistics).fallback("entropy")


def test_choose_without_labels_shares_one_pass_and_reports_each_methods_cost(trained_model, digits_splits):
    names = ["a", "b", "c"]
    scorer = _scorer(_family(trained_model, 3), names)
    inputs = scorer.prepare(digits_splits["adapt"].images[:40])
    grid = [dict(zip(names, w)) for w in simplex_grid(3, 0.5)]
    choice = choose_without_labels(scorer, grid, inputs, list(LABEL_FREE_METHODS), threshold=0.1)
    assert scorer.forward_passes == len(grid) * 40  # one pass over the grid for all four methods
    assert set(choice.selections) == set(LABEL_FREE_METHODS)
    for method, selection in choice.selections.items():
        assert selection.forward_passes == len(grid) * 40
        assert selection.weights == grid[int(np.argmax(LABEL_FREE_METHODS[method].score(choice.statistics.table)))]
        assert 0 <= choice.disagreement[method] <= 1
    with pytest.raises(ValueError, match="expected some of"):
        choose_without_labels(scorer, grid, inputs, ["grid"], threshold=0.1)


# --- the stage rows and the table ---------------------------------------------------------------


@pytest.fixture(scope="module")
def family_paths(trained_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("family")
    paths = {}
    for name, state in zip(BASE, _family(trained_model, 4, seed=1)):
        paths[name] = str(save_checkpoint(folder / f"{name}.safetensors", state, tiny_meta(name, width=8, family=True)))
    return paths


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_select_soups_writes_label_free_rows_and_the_table_shows_gaps_and_fallbacks(
    family_paths, digits_splits, tmp_path, threshold, caplog
):
    from robustsoup.data import prepare_splits
    from robustsoup.run_config import resolve_config
    from robustsoup.soups.report import shifts_table
    from robustsoup.soups.stages import evaluate_soups_shifts, select_soups

    config = resolve_config(
        {
            "model": {"width": 8},
            "soups": {
                "search": {
                    "step": 0.5,
                    "k": [30, 100],
                    "methods": ["grid", "entropy", "agreement", "bn_distance", "infomax"],
                    "fallback_threshold": threshold,
                    "precision": "float32",
                },
                "ensembles": [],
            },
        }
    )
    splits = prepare_splits("digits", tmp_path, n_adapt=100, n_test=200, seed=0)
    caplog.set_level("INFO", logger="robustsoup")
    selection = select_soups(
        config, family_paths, splits["adapt"], None, tmp_path / "scores.tsv", tmp_path / "selection.tsv"
    )
    # width 8: the scorer's backward passes (learned soups) in channels_last crash oneDNN on a CPU (SIGSEGV with
    # the CPU limited to AVX2), so its memory format is decided by the model's narrowest convolution, as training's
    assert "adaptation scores in float32, contiguous" in caplog.text
    free = selection[selection["label_free"] == 1]
    assert set(free["method"]) == {"entropy", "agreement", "bn_distance", "infomax"}
    assert set(free["k"]) == {30, 100} and (free["forward_passes"] == 10 * free["k"]).all()
    assert (free["fallback"] == (free["disagreement"] > threshold)).all()
    assert set(free["fallback_model"]) <= set(BASE) and (free["fallback_passes"] == 4 * free["k"]).all()
    metrics = evaluate_soups_shifts(
        config,
        family_paths,
        splits["test"],
        None,
        tmp_path / "selection.tsv",
        tmp_path / "shifts.tsv",
        tmp_path / "models.tsv",
    )
    table = shifts_table(
        metrics,
        pd.read_csv(tmp_path / "models.tsv", sep="\t"),
        pd.read_csv(tmp_path / "selection.tsv", sep="\t"),
        ["clean"],
    )
    acc = metrics.set_index("model")["accuracy"] * 100
    oracle = table.loc["best base model per shift (oracle)", "clean"]
    assert oracle == pytest.approx(round(acc[BASE].max(), 1))
    assert "per-shift soups (entropy, label-free, k=30)" not in table.index  # only k = 100 and the largest k
    for method in ("entropy", "agreement", "bn_distance", "infomax"):
        raw = table.loc[f"per-shift soups ({method}, label-free, k=100)"]
        safe = table.loc[f"per-shift soups ({method}, label-free + fallback, k=100)"]
        pick = free[(free["method"] == method) & (free["k"] == 100)].iloc[0]
        grid = table.loc["per-shift soups (grid, k=100)", "clean"]
        assert raw["Δ grid"] == pytest.approx(raw["clean"] - grid, abs=0.11)
        assert raw["Δ best base"] == pytest.approx(raw["clean"] - oracle, abs=0.11)
        assert safe["fallbacks"] == f"{int(pick['fallback'])}/1"
        expected = acc[pick["fallback_model"]] if pick["fallback"] else acc[f"soup-clean-{method}-k100"]
        assert safe["clean"] == pytest.approx(round(expected, 1))
        assert safe["forward passes"] == raw["forward passes"] + 400
    assert pd.isna(table.loc["linf", "Δ grid"])


# --- robustsoup soup-for ------------------------------------------------------------------------


@pytest.fixture
def image_folder(tmp_path, digits_splits):
    """Unlabelled images in nested folders, of other sizes than the models take, and a stray file."""
    folder = tmp_path / "shift"
    images = digits_splits["test"].images[:24].permute(0, 2, 3, 1).numpy()
    for i, image in enumerate(images):
        big = np.kron(image, np.ones((2, 2, 1), dtype=np.uint8))[:, :60]  # 64×60: resized, centre-cropped
        write_png(folder / ("a" if i % 2 else "b") / f"img{i:02d}.png", big)
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def overconfident_paths(trained_model, tmp_path):
    """The family of ``family_paths`` but for linf-nominal, which is linf with its classes shuffled and its
    logits ×10: the most confident model on any images and wrong on nearly all, on every CPU (the noise-made
    family's entropy pick depends on the CPU's round-off in training)."""
    states = _family(trained_model, 4, seed=1)
    head = states[0]["net.linear.weight"], states[0]["net.linear.bias"]
    shuffle = torch.roll(torch.arange(head[0].shape[0]), 1)
    states[3] = {**states[0], "net.linear.weight": 10 * head[0][shuffle], "net.linear.bias": 10 * head[1][shuffle]}
    folder = tmp_path / "overconfident"
    return {
        name: str(save_checkpoint(folder / f"{name}.safetensors", state, tiny_meta(name, width=8, family=True)))
        for name, state in zip(BASE, states)
    }


def test_soup_for_writes_the_chosen_soup_through_the_one_mixer(overconfident_paths, image_folder, tmp_path, capsys):
    from robustsoup.cli import main

    family_paths = overconfident_paths
    out = tmp_path / "chosen.safetensors"
    models = [family_paths[n] for n in BASE]
    assert main(["soup-for", str(image_folder), *models, "-o", str(out), "--step", "0.5", "--method", "entropy"]) == 0
    printed = capsys.readouterr().out
    assert "24 images from" in printed and "10 soups" in printed
    for method in LABEL_FREE_METHODS:
        assert method in printed
    state, meta = load_checkpoint(out)
    soup = meta.provenance["soup"]
    assert meta.provenance["soup_for"]["method"] == "entropy" and meta.provenance["soup_for"]["images"] == 24
    assert soup == meta.provenance["soup_for"]["pick"]  # no --fallback: the pick is written, signal or not
    expected = affine_combination([load_checkpoint(p)[0] for p in models], [soup[n] for n in BASE])
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    from robustsoup.soups.grid import mixture_text  # the one format of a soup's weights, tables and CLI alike

    assert f"wrote {out} = {mixture_text((soup[n], n) for n in BASE)} (" in printed
    # the same choice as the search code makes on the images the data readers decode
    from robustsoup.soups.unlabelled import read_unlabelled

    images, _ = read_unlabelled(image_folder, meta, 0)
    scorer = _scorer([load_checkpoint(p)[0] for p in models], BASE)
    grid = [dict(zip(BASE, w)) for w in simplex_grid(4, 0.5)]
    assert SELECTION_METHODS["entropy"](scorer, grid, scorer.prepare(images)).weights == soup
    # entropy is drawn to the over-confident model, which the other methods do not pick: its signal is weak,
    # and a named fallback is written instead
    assert soup["linf-nominal"] > 0
    out2 = tmp_path / "fallback.safetensors"
    args = ["--step", "0.5", "--method", "entropy", "--threshold", "0.2", "--fallback", family_paths["linf-l2"]]
    assert main(["soup-for", str(image_folder), *models, "-o", str(out2), *args]) == 0
    provenance = load_checkpoint(out2)[1].provenance
    assert provenance["soup_for"]["disagreement"] > 0.2 and provenance["soup_for"]["fell_back_to"] == "linf-l2"
    assert provenance["soup"] == {"linf": 0.0, "linf-l2": 1.0, "linf-l1": 0.0, "linf-nominal": 0.0}
    assert "writing the fallback linf-l2 instead" in capsys.readouterr().err


def test_soup_for_says_what_is_wrong(family_paths, image_folder, tmp_path, capsys):
    from robustsoup.cli import main

    models = [family_paths[n] for n in BASE]
    out = tmp_path / "s.safetensors"
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    assert main(["soup-for", str(empty), *models, "-o", str(out)]) == 2
    assert "holds no image files (1 other file(s))" in capsys.readouterr().err
    assert main(["soup-for", str(tmp_path / "missing"), *models, "-o", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err
    other = tiny_meta("wide", width=4)
    wide = save_checkpoint(tmp_path / "wide.safetensors", other.build().state_dict(), other)
    assert main(["soup-for", str(image_folder), models[0], str(wide), "-o", str(out)]) == 2
    assert "soups need one architecture" in capsys.readouterr().err
    assert main(["soup-for", str(image_folder), models[0], "-o", str(out)]) == 2
    assert "at least two checkpoints" in capsys.readouterr().err
    assert main(["soup-for", str(image_folder), *models, "-o", str(out), "--fallback", "nobody"]) == 2
    assert "none of the checkpoints" in capsys.readouterr().err
    assert main(["soup-for", str(image_folder), *models, "-o", str(out), "--step", "0.3"]) == 2
    assert "--step 0.3: step 0.3 must divide 1" in capsys.readouterr().err
    (image_folder / "a" / "broken.png").write_bytes(b"not a png at all")
    assert main(["soup-for", str(image_folder), *models, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cannot decode image" in err and "broken.png" in err
    assert not out.exists()


def test_the_table_puts_label_free_rows_next_to_grid_search_with_gaps_per_shift():
    from robustsoup.soups.report import shifts_table

    accuracy = {  # held-out accuracy by model and shift
        ("a", "clean"): 0.90,
        ("a", "noise"): 0.50,
        ("b", "clean"): 0.80,
        ("b", "noise"): 0.70,
        ("soup-clean-grid-k100", "clean"): 0.92,
        ("soup-noise-grid-k100", "noise"): 0.72,
        ("soup-clean-entropy-k100", "clean"): 0.88,
        ("soup-noise-entropy-k100", "noise"): 0.40,
        ("soup-clean-entropy-k50", "clean"): 0.10,
        ("soup-noise-entropy-k50", "noise"): 0.10,
    }
    metrics = pd.DataFrame([{"model": m, "evalset": e, "accuracy": a} for (m, e), a in accuracy.items()])
    models = pd.DataFrame(
        [{"model": m, "kind": "base", "method": "", "k": 0, "flops": 1} for m in ("a", "b")]
        + [
            {"model": m, "kind": "specific", "method": m.split("-")[2], "k": int(m.split("-k")[1]), "flops": 1}
            for m, _ in accuracy
            if m.startswith("soup-")
        ]
    )
    free = {"label_free": 1, "fallback_model": "a", "fallback_passes": 200}
    selection = pd.DataFrame(
        [
            {"evalset": "clean", "k": 100, "method": "grid", "forward_passes": 300, "label_free": 0},
            {"evalset": "noise", "k": 100, "method": "grid", "forward_passes": 300, "label_free": 0},
            {"evalset": "clean", "k": 100, "method": "entropy", "forward_passes": 300, "fallback": 0, **free},
            {"evalset": "noise", "k": 100, "method": "entropy", "forward_passes": 300, "fallback": 1, **free},
            {"evalset": "clean", "k": 50, "method": "entropy", "forward_passes": 150, "fallback": 0, **free},
            {"evalset": "noise", "k": 50, "method": "entropy", "forward_passes": 150, "fallback": 0, **free},
        ]
    )
    table = shifts_table(metrics, models, selection, ["clean", "noise"])
    rows = list(table.index)
    assert rows.index("per-shift soups (entropy, label-free, k=100)") == rows.index("per-shift soups (grid, k=100)") + 1
    assert "per-shift soups (entropy, label-free, k=50)" not in rows  # k = 100 and the largest k only
    assert table.loc["best base model per shift (oracle)", ["clean", "noise"]].tolist() == [90.0, 70.0]
    raw = table.loc["per-shift soups (entropy, label-free, k=100)"]
    assert raw["Δ grid"] == pytest.approx(((88 - 92) + (40 - 72)) / 2)
    assert raw["Δ best base"] == pytest.approx(((88 - 90) + (40 - 70)) / 2) and raw["worst Δ best base"] == -30.0
    safe = table.loc["per-shift soups (entropy, label-free + fallback, k=100)"]
    assert safe[["clean", "noise"]].tolist() == [88.0, 50.0]  # noise fell back to base model a
    assert safe["fallbacks"] == "1/2" and safe["forward passes"] == 600 + 200
    assert safe["worst Δ best base"] == -20.0
    assert table.loc["per-shift soups (grid, k=100)", "Δ grid"] == 0.0
    from robustsoup.soups.stages import _label_free_note

    note = _label_free_note(table, {"fallback_threshold": 0.1})
    assert "more than 10% of the images" in note and "fired on 1 of 2 picks" in note
    assert "by +5.0 points" in note  # (88 + 50) / 2 − (88 + 40) / 2


def test_select_soups_logs_its_steps_with_i_of_n_and_an_eta(family_paths, tmp_path, caplog, monkeypatch):
    import logging

    from robustsoup import progress
    from robustsoup.data import prepare_splits
    from robustsoup.run_config import resolve_config
    from robustsoup.soups.stages import select_soups

    monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
    caplog.set_level(logging.INFO)
    config = resolve_config(
        {
            "model": {"width": 8},
            "soups": {"search": {"step": 0.5, "k": [10, 20], "methods": ["grid", "greedy", "entropy", "agreement"]}},
        }
    )
    splits = prepare_splits("digits", tmp_path, n_adapt=20, n_test=20, seed=0)
    select_soups(config, family_paths, splits["adapt"], None, tmp_path / "scores.tsv", tmp_path / "selection.tsv")
    lines = [r.getMessage() for r in caplog.records if r.name == "robustsoup.progress"]
    # 1 shift (clean) × 2 sizes × (2 labelled methods + the label-free ones in one pass) = 6 steps
    assert [line.split(" (")[0] for line in lines] == [f"select_soups: {i}/6 steps" for i in range(1, 7)]
    assert all(re.search(r"elapsed, ETA \d+(s|m\d\ds)$", line) and "\r" not in line for line in lines)


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_select_soups_memo_skips_repeated_passes_and_writes_the_same_files(
    family_paths, tmp_path, monkeypatch, precision
):
    """The scorer's memo (issue 28): every method, label-free first, then grid search, halving, greedy and
    the learned soup read the logits of soups already passed over the same images. The score and
    selection files are byte for byte those of a scorer without the memo (forward passes counted
    alike), with fewer real forward passes."""
    from robustsoup.data import prepare_splits
    from robustsoup.run_config import resolve_config
    from robustsoup.soups import stages

    config = resolve_config(
        {
            "model": {"width": 8},
            "soups": {
                "search": {
                    "step": 0.5,
                    "k": [16, 40],
                    "methods": list(SELECTION_METHODS),
                    "learned_steps": 4,
                    "precision": precision,
                }
            },
        }
    )
    splits = prepare_splits("digits", tmp_path, n_adapt=40, n_test=20, seed=0)
    passed = {}
    for memo in (False, True):

        class Counting(SoupScorer):
            with_memo = memo

            def __init__(self, *args, **kwargs):
                super().__init__(*args, **{**kwargs, "memo": self.with_memo})

            def logits(self, inputs):
                passed[self.with_memo] = passed.get(self.with_memo, 0) + len(inputs)
                return super().logits(inputs)

        monkeypatch.setattr(stages, "SoupScorer", Counting)
        out = tmp_path / f"memo-{memo}"
        out.mkdir()
        stages.select_soups(config, family_paths, splits["adapt"], None, out / "scores.tsv", out / "selection.tsv")
    for name in ("scores.tsv", "selection.tsv"):
        assert (tmp_path / "memo-True" / name).read_bytes() == (tmp_path / "memo-False" / name).read_bytes()
    assert passed[True] < passed[False]


def test_scorer_memo_answers_like_a_scorer_without_it_across_inputs(trained_model):
    states = _family(trained_model, 2)
    scorer = _scorer(states, BASE[:2], memo=True)
    generator = torch.Generator().manual_seed(0)
    first, second = (scorer.prepare(torch.rand(12, 3, 32, 32, generator=generator)) for _ in range(2))
    labels = torch.zeros(12, dtype=torch.long)
    fresh = _scorer(states, BASE[:2])
    for inputs in (first, second, first[:6], first):
        for weights in ({"linf": 1.0}, {"linf": 0.5, "linf-l2": 0.5}, {"linf": 1.0}):
            n = len(inputs)
            assert torch.equal(scorer.correct(weights, inputs, labels[:n]), fresh.correct(weights, inputs, labels[:n]))
    assert scorer.forward_passes == fresh.forward_passes
