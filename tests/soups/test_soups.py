from robustsoup.run_config import resolve_config
from robustsoup.soups.grid import grid_from_config, line_grid, line_weights, soup_id

BASE = ["linf", "linf-l2", "linf-l1", "linf-nominal"]


def test_line_weights_include_both_ends_without_float_drift():
    assert line_weights(-0.2, 1.2, 0.2) == [-0.2, 0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2]
    assert line_weights(0, 1, 0.1)[3] == 0.3


def test_soup_ids_are_stable_readable_and_file_name_safe():
    assert soup_id({"linf": 0.8, "linf-l2": 0.2}, BASE) == "soup-linf_0.8-linf-l2_0.2"
    assert soup_id({"linf-l2": -0.2, "linf": 1.2}, BASE) == "soup-linf_1.2-linf-l2_m0.2"


def test_line_grid_skips_the_base_models_and_shared_soups():
    soups = line_grid([["linf", "linf-l2"], ["linf-l2", "linf"]], 0.0, 1.0, 0.5, BASE)
    assert [s.id for s in soups] == ["soup-linf_0.5-linf-l2_0.5"]
    assert dict(soups[0].weights) == {"linf": 0.5, "linf-l2": 0.5, "linf-l1": 0.0, "linf-nominal": 0.0}


def test_default_grid_has_extrapolated_soups():
    ids = [s.id for s in grid_from_config(resolve_config({}))]
    assert "soup-linf_1.2-linf-l2_m0.2" in ids and "soup-linf_m0.2-linf-l2_1.2" in ids
    assert len(ids) == 6


def test_simplex_grid_sizes_and_extension():
    from math import comb

    import pytest

    from robustsoup.soups.grid import simplex_grid

    assert len(simplex_grid(4, 0.1)) == comb(13, 3) == 286
    assert len(simplex_grid(3, 0.1)) == comb(12, 2) == 66
    assert all(abs(sum(w) - 1) < 1e-9 and min(w) >= 0 for w in simplex_grid(3, 0.25))
    extended = simplex_grid(3, 0.1, extend=0.2)
    assert min(min(w) for w in extended) == -0.2 and max(max(w) for w in extended) == 1.4
    assert len(extended) > 66 and all(abs(sum(w) - 1) < 1e-9 for w in extended)
    with pytest.raises(ValueError, match="must divide 1"):
        simplex_grid(3, 0.3)


def test_mixture_text_writes_each_sign_once():
    from robustsoup.soups.grid import mixture_text

    assert mixture_text([(1.2, "linf"), (-0.2, "linf-l2")]) == "1.2·linf − 0.2·linf-l2"
    assert mixture_text([(-0.2, "linf"), (1.2, "linf-l2")]) == "−0.2·linf + 1.2·linf-l2"
    # zero weights are left out, a leading zero too (soup-for's picks name every base model)
    assert mixture_text([(0.0, "a"), (-0.5, "b"), (0.0, "c"), (1.5, "d")]) == "−0.5·b + 1.5·d"
    assert mixture_text([(0.0, "a")]) == "0"


def test_each_soup_names_its_mixture_in_base_model_order():
    soups = {s.id: s for s in grid_from_config(resolve_config({}))}
    assert soups["soup-linf_1.2-linf-l2_m0.2"].mixture() == "1.2·linf − 0.2·linf-l2"
    assert soups["soup-linf_m0.2-linf-l2_1.2"].mixture() == "−0.2·linf + 1.2·linf-l2"


def test_the_accuracy_table_shows_the_mixture_it_is_given_for_each_soup():
    import pandas as pd

    from robustsoup.lp.report import accuracy_table

    rows = [
        {"model": m, "threat": "none", "corruption": "none", "accuracy": a}
        for m, a in [("linf", 0.5), ("soup-linf_0.5-linf-l2_0.5", 0.6), ("linf-l2", 0.7)]
    ]
    table = accuracy_table(
        pd.DataFrame(rows),
        ["linf", "linf-l2", "soup-linf_0.5-linf-l2_0.5"],
        {"soup-linf_0.5-linf-l2_0.5": "0.5·linf + 0.5·linf-l2", "soup-absent": "x"},
    )
    assert list(table.index) == ["linf", "linf-l2", "soup-linf_0.5-linf-l2_0.5"]
    assert table["weights"].tolist() == ["", "", "0.5·linf + 0.5·linf-l2"]
    assert table.loc["soup-linf_0.5-linf-l2_0.5", "clean (all N)"] == 60.0
