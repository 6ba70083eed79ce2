"""The house style of the figures: legible annotations, readable names, shared ranges, legends off the data."""

from __future__ import annotations

import importlib
import itertools

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from robustsoup.report import labels, style
from robustsoup.report.figures import save_figure

THREATS = {"none": 0.0, "Linf": 0.1, "L2": 3.0, "L1": 24.0, "union": 0.0}


class Captured(list):
    """Figures a study's plot functions hand to ``save_figure``, kept open for inspection."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.monkeypatch = monkeypatch

    def plot(self, module_name: str, function: str):
        """The plot function ``function`` of ``module_name``, its ``save_figure`` replaced by a keeper."""
        module = importlib.import_module(module_name)

        def keep(fig, path, title="", caption=""):
            fig.canvas.draw()
            self.append({"fig": fig, "path": path, "title": title, "caption": caption})
            return []

        self.monkeypatch.setattr(module, "save_figure", keep)
        return getattr(module, function)


@pytest.fixture
def captured(monkeypatch):
    figures = Captured(monkeypatch)
    yield figures
    import matplotlib.pyplot as plt

    for entry in figures:
        plt.close(entry["fig"])


def ternary_table(step: float = 0.25, clean_spread: float = 0.6) -> pd.DataFrame:
    """Every soup of three models on the simplex grid, five threat rows each, clean within a narrow band."""
    rng = np.random.default_rng(0)
    ticks = np.round(np.arange(0, 1 + 1e-9, step), 6)
    rows = []
    for a, b in itertools.product(ticks, ticks):
        c = round(1 - a - b, 6)
        if c < -1e-9:
            continue
        for threat, eps in THREATS.items():
            accuracy = 0.99 - clean_spread / 100 * rng.random() if threat == "none" else 0.3 + 0.6 * rng.random()
            rows.append(
                {
                    "model": f"soup-{a}-{b}",
                    "threat": threat,
                    "eps": eps,
                    "attack": "clean" if threat == "none" else "apgd-ce(10it×1)",
                    "n": 450 if threat == "none" else 64,
                    "accuracy": accuracy,
                    "linf": a,
                    "linf-l2": b,
                    "linf-l1": abs(c),
                }
            )
    return pd.DataFrame(rows)


def overlaps(a, b) -> bool:
    return a.x0 < b.x1 and b.x0 < a.x1 and a.y0 < b.y1 and b.y0 < a.y1


def test_text_colour_contrasts_with_its_background():
    viridis = matplotlib.colormaps["viridis"]
    assert style.text_colour(viridis(1.0)) == "black"  # yellow
    assert style.text_colour(viridis(0.0)) == "white"  # dark purple
    assert style.text_colour("#ffffff") == "black" and style.text_colour("#000000") == "white"


def test_colour_range_shows_small_differences_and_never_collapses():
    assert style.colour_range([98.7, 99.3, 99.0]) == (98.5, 99.5)  # widened to the 1-point minimum, centred
    assert style.colour_range([30.0, 80.0]) == (30.0, 80.0)  # the data's own range
    assert style.colour_range([100.0, 100.0]) == (99.0, 100.0)  # kept inside [0, 100]
    assert style.colour_range([]) == (0.0, 100.0)


def test_shared_limits_cover_every_panel():
    low, high = style.shared_limits([12.0, 55.0, 99.5])
    assert low <= 12.0 and high >= 99.5 and low == 0.0
    low, high = style.shared_limits([80.0, 95.0])
    assert 70.0 <= low <= 80.0 and high >= 95.0


def test_model_threat_and_attack_names_read_as_words():
    assert labels.model_label("linf") == "L∞ parent"
    assert labels.model_label("linf-l2") == "L∞→L2 fine-tune"
    assert labels.model_label("linf-l1", short=True) == "L∞→L1"
    assert labels.model_label("l2-nominal") == "L2→nominal fine-tune"
    assert labels.model_label("soup-linf_0.5-linf-l2_0.5") == "soup-linf_0.5-linf-l2_0.5"
    assert labels.model_label("rws-fog") == "rws-fog"
    assert labels.threat_label("Linf", 0.1) == "L∞, ε=0.1"
    assert labels.threat_label("none", 0.0) == "clean" and labels.threat_label("union", 0.0) == "union"
    assert labels.attack_text("apgd-ce(20it×1)") == "APGD-CE, 20 iterations, 1 restart"
    assert labels.attack_text("apgd-ce(100it×5)") == "APGD-CE, 100 iterations, 5 restarts"
    assert labels.attack_text("something else") == "something else"
    # AutoAttack's standard plans (APGD-T restarting once per target) are named so; strong-l1's L1 is stronger
    for runs in ("1+9×1", "5+5×1"):
        standard = labels.attack_text(f"apgd-ce+apgd-t(100it, {runs} runs)")
        assert standard == f"APGD-CE + APGD-T (AutoAttack standard), 100 iterations, {runs} runs"
    strong = labels.attack_text("apgd-ce+apgd-t(100it, 5+9×5 runs)")
    assert "AutoAttack standard)" not in strong and "stronger than AutoAttack standard" in strong
    assert "9 target classes × 5 restarts" in strong and strong.endswith("5+9×5 runs")
    assert labels.threat_label("none@attacked", 0.0) == "clean (attacked n)"


def test_notes_name_clean_on_the_attacked_images_without_an_attack_or_eps():
    from robustsoup.report.tables import attack_summary, evaluation_note

    standard, strong = "apgd-ce+apgd-t(100it, 1+9×1 runs)", "apgd-ce+apgd-t(100it, 5+9×5 runs)"
    metrics = pd.DataFrame(
        {
            "threat": ["none", "none@attacked", "Linf", "L1", "union"],
            "eps": [0.0, 0.0, 0.1, 12.0, 0.0],
            "n": [450, 160, 160, 160, 160],
            "attack": ["clean", "clean", standard, strong, f"{standard}+{strong}"],
        }
    )
    note = evaluation_note(metrics)
    assert "clean (all N): n=450, clean" in note and "clean (attacked n): n=160, clean" in note
    assert "L∞ ε=0.1: n=160" in note and "L1 ε=12: n=160" in note and "ε=0:" not in note
    summary = attack_summary(metrics)
    assert summary.startswith("robust accuracy: APGD-CE + APGD-T (AutoAttack standard)") and "n=160" in summary
    assert "stronger than AutoAttack standard" in summary
    assert "clean" not in summary.replace("robust accuracy", "") and "+apgd" not in summary
    described = labels.describe_attacks(metrics)
    assert described.count("APGD-CE + APGD-T") == 2 and described.endswith("n=160 test images")


def test_save_figure_writes_print_resolution_png_pdf_and_a_captioned_page(tmp_path):
    import matplotlib.pyplot as plt

    with style.house_style():
        fig, ax = plt.subplots(figsize=(style.ONE_COLUMN, 2.0))
        ax.plot([0, 1], [0, 1])
        style.footnote(fig, "a long footnote on how the numbers were measured " * 6)
    png, pdf, page = save_figure(fig, tmp_path / "line.png", "A line", "It goes up: ε=0.1.")
    with Image.open(png) as image:
        assert round(image.info["dpi"][0]) == 300
        # drawn at its printed width: the footnote wraps instead of widening the figure
        assert 0.9 * style.ONE_COLUMN * 300 <= image.width <= 1.05 * style.ONE_COLUMN * 300
    assert pdf.read_bytes().startswith(b"%PDF")
    text = page.read_text(encoding="utf-8")
    assert "data:image/png;base64," in text and "It goes up: ε=0.1." in text and "<h1>A line</h1>" in text
    with pytest.raises(ValueError, match="expected a .png path"):
        save_figure(fig, tmp_path / "line.svg")


def test_ternary_is_legible(captured, tmp_path):
    plot_ternary = captured.plot("robustsoup.soups.report", "plot_ternary")
    table = ternary_table()
    plot_ternary(table, ["linf", "linf-l2", "linf-l1"], tmp_path / "ternary.png")
    fig = captured[0]["fig"]
    renderer = fig.canvas.get_renderer()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["clean", "L∞, ε=0.1", "L2, ε=3", "L1, ε=24", "union"]
    for ax, threat in zip(panels, THREATS):
        values = table[table["threat"] == threat]["accuracy"].to_numpy() * 100
        cells = ax.collections[0]
        numbers = [t for t in ax.texts if t.get_text().replace(".", "").isdigit()]
        assert len(numbers) == len(values) == 15
        # one decimal, legible size, and the colour of each number contrasts with its cell
        assert sorted(t.get_text() for t in numbers) == sorted(f"{v:.1f}" for v in values)
        assert min(t.get_fontsize() for t in numbers) >= 6
        norm = cells.norm
        assert norm.vmax - norm.vmin >= 1.0 - 1e-9 and norm.vmin >= min(values) - 1 and norm.vmax <= max(values) + 1
        for text in numbers:
            background = cells.cmap(norm(float(text.get_text())))
            assert to_rgba(text.get_color()) == to_rgba(style.text_colour(background))
        # vertex labels collide neither with the title nor with each other
        title = ax.title.get_window_extent(renderer)
        vertex = [t.get_window_extent(renderer) for t in ax.texts if "L∞" in t.get_text()]
        assert len(vertex) == 3
        assert not any(overlaps(title, v) for v in vertex)
        assert not any(overlaps(a, b) for a, b in itertools.combinations(vertex, 2))
    # the clean panel spreads its narrow band over the whole colour map
    clean = panels[0].collections[0].norm
    assert clean.vmax - clean.vmin < 1.5
    assert "ε=0.1" in captured[0]["caption"] and "APGD-CE" in captured[0]["caption"]


def line_points() -> pd.DataFrame:
    rows = []
    for w in (-0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25):
        for threat, eps in THREATS.items():
            rows.append(
                {
                    "position": w,
                    "threat": threat,
                    "accuracy": 0.5 + 0.3 * w if threat != "none" else 0.98,
                    "n": 450 if threat == "none" else 160,
                    "eps": eps,
                    "attack": "clean" if threat == "none" else "apgd-ce(20it×1)",
                }
            )
    return pd.DataFrame(rows)


def test_soup_line_names_models_and_eps_and_keeps_its_legend_off_the_data(captured, tmp_path):
    plot_soup_line = captured.plot("robustsoup.soups.report", "plot_soup_line")
    plot_soup_line(line_points(), "linf", "linf-l2", tmp_path / "line.png")
    fig = captured[0]["fig"]
    ax = fig.axes[0]
    legend = ax.get_legend()
    entries = [t.get_text() for t in legend.get_texts()]
    assert entries[:5] == ["clean", "L∞, ε=0.1", "L2, ε=3", "L1, ε=24", "union"] and "extrapolation" in entries
    renderer = fig.canvas.get_renderer()
    assert not overlaps(legend.get_window_extent(renderer), ax.get_window_extent(renderer))
    assert "θ[" not in ax.get_xlabel() and "L∞→L2" in ax.get_xlabel()
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert "0\nL∞" in ticks and "1\nL∞→L2" in ticks
    assert ax.get_ylim() == (0.0, 101.0)
    assert "L∞ parent" in captured[0]["title"] and "APGD-CE, 20 iterations" in captured[0]["caption"]


def rws_config() -> dict:
    return {
        "dataset": "digits",
        "rws": {
            "corruptions": ["fog", "contrast"],
            "lambdas": [0, 0.5, 1, 1.5],
            "eval_severities": [1, 3, 5],
            "lambda": 1.0,
            "layers": 5,
            "deploy": "shallow",
            "compose": ["fog", "contrast"],
            "compose_lambdas": [0, 0.5, 1],
            "compose_severity": 3,
        },
    }


def rws_metrics(config: dict) -> pd.DataFrame:
    from robustsoup.rws.config import compose_name, compound_name, lambda_name

    rws, rows = config["rws"], []

    def add(model, corruption, severity, accuracy):
        rows.append({"model": model, "corruption": corruption, "severity": severity, "accuracy": accuracy, "n": 450})

    for c, (base, slope) in zip(rws["corruptions"], [(0.2, 0.5), (0.8, 0.05)]):  # one steep, one flat
        for lam in rws["lambdas"]:
            add(lambda_name(c, lam), "none", 0, 0.99 - 0.02 * lam)
            for s in rws["eval_severities"]:
                add(lambda_name(c, lam), c, s, min(1.0, base + slope * lam / s))
    a, b = rws["compose"]
    for la, lb in itertools.product(rws["compose_lambdas"], repeat=2):
        name = compose_name(a, la, b, lb)
        add(name, "none", 0, 0.99 - 0.01 * (la + lb))
        for stream in (a, b, compound_name(a, b)):
            add(name, stream, rws["compose_severity"], 0.3 + 0.2 * la + 0.1 * lb)
    return pd.DataFrame(rows)


def test_lambda_panels_share_one_y_range(captured, tmp_path):
    plot_lambda = captured.plot("robustsoup.rws.report", "plot_lambda")
    config = rws_config()
    plot_lambda(config, rws_metrics(config), tmp_path / "lambda.png")
    fig = captured[0]["fig"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["fog", "contrast"]
    assert len({ax.get_ylim() for ax in panels}) == 1  # the flat panel is not stretched into a trend
    assert fig.legends and not any(ax.get_legend() for ax in panels)  # one legend, outside the panels


def test_compose_panels_share_one_colour_scale_with_contrasting_numbers(captured, tmp_path):
    plot_compose = captured.plot("robustsoup.rws.report", "plot_compose")
    config = rws_config()
    plot_compose(config, rws_metrics(config), tmp_path / "compose.png")
    fig = captured[0]["fig"]
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert len(panels) == 4
    norms = {(ax.images[0].norm.vmin, ax.images[0].norm.vmax) for ax in panels}
    assert len(norms) == 1
    for ax in panels:
        image = ax.images[0]
        for text in ax.texts:
            background = image.cmap(image.norm(float(text.get_text())))
            assert to_rgba(text.get_color()) == to_rgba(style.text_colour(background))
            assert "." in text.get_text()


def test_distill_figure_names_models_and_keeps_the_legend_outside(captured, tmp_path):
    plot_distill = captured.plot("robustsoup.distill.report", "plot_distill")
    index = ["teacher", "student", "student-finetuned", "student-multihead", "student-multihead-oracle"]
    table = pd.DataFrame(
        {
            "rule": ["", "", "", "ours", "oracle"],
            "clean": [99.0, 98.0, 98.5, 98.7, 98.9],
            "corruptions": [90.0, 80.0, 85.0, 88.0, 89.0],
            "noise": [95.0, 90.0, 92.0, 93.0, 94.0],
            "weather": [80.0, 60.0, 70.0, 75.0, 76.0],
            "train time (s)": [12.0, 10.0, 9.0, 4.0, 4.0],
            "train CPU (s)": [11.0, 9.5, 8.5, 3.5, 3.5],
        },
        index=pd.Index(index, name="model"),
    )
    plot_distill(table, tmp_path / "distill.png")
    fig = captured[0]["fig"]
    accuracy, cost = fig.axes[:2]
    names = [t.get_text() for t in accuracy.get_yticklabels()]
    assert names[::-1] == [
        "robust teacher",
        "student (normal training)",
        "student, full fine-tune",
        "multi-head, rule ours",
        "multi-head, rule oracle",
    ]
    assert len(cost.patches) == 5 and cost.get_xlabel() == "training CPU (s)"
    assert fig.legends and accuracy.get_legend() is None


def test_eps_reads_as_a_reader_writes_it():
    from robustsoup.report.labels import eps_text, threat_label

    assert threat_label("Linf", 8 / 255) == "L∞, ε=8/255"
    assert [eps_text(e) for e in (4 / 255, 0.1, 0.2, 3.0, 12.0, 255.0)] == ["4/255", "0.1", "0.2", "3", "12", "255"]
