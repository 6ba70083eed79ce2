"""Tables and figures of Robust Weight Signatures (Cai et al. 2023) from tidy metric rows.

Accuracies come from ``metrics/rws.tsv`` only; storage comes from the sizes of the files on disk
(checkpoints, signatures, the oracle-free classifier); per-layer norms from the signatures'
sidecars, where extraction recorded them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import Normalize

from ..io import write_text_atomic
from ..report.figures import save_figure
from ..report.html import write_table_page
from ..report.style import (
    MARKERS,
    TWO_COLUMNS,
    annotate_values,
    colour_range,
    footnote,
    house_style,
    legend_outside,
    palette,
    sequential,
    shared_limits,
)
from .captions import RWS_REPORT
from .config import (
    compose_name,
    compound_name,
    deploy_variant,
    lambda_name,
    parse_variant,
    quantization_label,
    quantized_variants,
    transfer_targets,
    variant_label,
    variant_suffix,
    variants,
)
from .signature_file import storage_bytes

MB = 1e6


def accuracy(metrics: pd.DataFrame, model: str, corruption: str = "none", severities: Sequence[int] = (0,)) -> float:
    """Mean accuracy (%) of ``model`` on ``corruption`` over ``severities`` (each severity weighs the same)."""
    rows = metrics[
        (metrics["model"] == model)
        & (metrics["corruption"] == corruption)
        & (metrics["severity"].isin(list(severities)))
    ]
    if rows.empty:
        return float("nan")
    return float(rows.groupby("severity")["accuracy"].mean().mean() * 100)


def _n(metrics: pd.DataFrame, model: str) -> int:
    rows = metrics[metrics["model"] == model]
    return int(rows["n"].max()) if not rows.empty else 0


def quantization_note(config: Mapping) -> str:
    """How the quantized rows were made, for the notes under the tables."""
    rws = config["rws"]
    scope = {
        "experts": "one range per key over all the experts' signatures",
        "signature": "one range per tensor of each signature",
    }
    parts = [
        f"{quantization_label(spec)}, {'packed codes' if 'levels' in spec else 'uint8/uint16 codes'}, "
        f"{scope[spec['range']]}"
        for spec in quantized_variants(config).values()
    ]
    rule = (
        "layers: stem and residual blocks, BatchNorm and shortcuts set to the experts' mean (the reference's rule)"
        if rws["layer_rule"] == "reference"
        else "layers: weight layers in network order"
    )
    return (
        "Quantized rows, linear over [min, max]: "
        + ("; ".join(parts) if parts else "none")
        + f'. The paper\'s "16-bit" and "8-bit" signatures are 16 and 8 levels. Signature {rule}.'
    )


def table1(
    config: Mapping,
    metrics: pd.DataFrame,
    model_paths: Mapping[str, str],
    signature_paths: Mapping[str, Mapping[str, str]],
    classifier_path,
) -> pd.DataFrame:
    """The paper's Table 1: storage, clean accuracy TA and mean corruption accuracy RA per method.

    RA is the mean over ``rws.corruptions`` at the training severities ``rws.severities``. TA of
    an RWS row is measured after the patch is removed (the paper's point: no cost on clean
    data); ``TA patched`` is the clean accuracy with the patch on. Storage is what has to be
    kept: the standard checkpoint plus one signature (or expert) per corruption, in bytes of the
    ``.safetensors`` files (sidecars not counted).
    """
    rws = config["rws"]
    corruptions, severities, k = list(rws["corruptions"]), list(rws["severities"]), rws["layers"]
    std_bytes = storage_bytes(model_paths["standard"])

    def ra(models: Mapping[str, str]) -> float:
        return float(np.mean([accuracy(metrics, models[c], c, severities) for c in corruptions]))

    rows = []

    def add(label, storage, ta, ra_value, ta_patched=float("nan"), signature=float("nan"), n=0):
        rows.append(
            {
                "method": label,
                "storage (MB)": storage / MB,
                "storage (bytes)": int(storage),
                "× standard": storage / std_bytes,
                "RWS file / checkpoint": signature,
                "TA": ta,
                "RA": ra_value,
                "TA patched": ta_patched,
                "n": n,
            }
        )

    add(
        "Standard",
        std_bytes,
        accuracy(metrics, "standard"),
        ra(dict.fromkeys(corruptions, "standard")),
        n=_n(metrics, "standard"),
    )
    add(
        "Data Augmentation",
        storage_bytes(model_paths["augment"]),
        accuracy(metrics, "augment"),
        ra(dict.fromkeys(corruptions, "augment")),
        n=_n(metrics, "augment"),
    )
    add(
        "All Models",
        std_bytes + sum(storage_bytes(model_paths[f"expert-{c}"]) for c in corruptions),
        accuracy(metrics, "standard"),
        ra({c: f"expert-{c}" for c in corruptions}),
        n=_n(metrics, "standard"),
    )
    for variant in variants(config):
        names = {c: f"rws-{c}{variant_suffix(variant)}" for c in corruptions}
        sig_bytes = [storage_bytes(signature_paths[variant][c]) for c in corruptions]
        add(
            variant_label(variant, k),
            std_bytes + sum(sig_bytes),
            float(np.mean([accuracy(metrics, f"{names[c]}-off") for c in corruptions])),
            ra(names),
            float(np.mean([accuracy(metrics, names[c]) for c in corruptions])),
            float(np.mean(sig_bytes)) / std_bytes,
            n=_n(metrics, names[corruptions[0]]),
        )
    deploy = deploy_variant(config)
    sig_bytes = [storage_bytes(signature_paths[deploy][c]) for c in corruptions]
    add(
        f"{variant_label(deploy, k)}, oracle-free",
        std_bytes + sum(sig_bytes) + storage_bytes(classifier_path),
        accuracy(metrics, "rws-auto"),
        ra(dict.fromkeys(corruptions, "rws-auto")),
        signature=float(np.mean(sig_bytes)) / std_bytes,
        n=_n(metrics, "rws-auto"),
    )
    return pd.DataFrame(rows).set_index("method")


def table4(config: Mapping, metrics: pd.DataFrame) -> pd.DataFrame:
    """The paper's Table 4: per corruption, the standard model without and with its RWS (deploy variant).

    Expert and data-augmentation columns for reference; the last row averages the corruptions.
    """
    rws = config["rws"]
    severities = list(rws["severities"])
    suffix = variant_suffix(deploy_variant(config))
    rows = []
    for c in rws["corruptions"]:
        without = accuracy(metrics, "standard", c, severities)
        with_rws = accuracy(metrics, f"rws-{c}{suffix}", c, severities)
        rows.append(
            {
                "corruption": c,
                "w.o. RWS": without,
                "w. RWS": with_rws,
                "Diff.": with_rws - without,
                "expert": accuracy(metrics, f"expert-{c}", c, severities),
                "Data Augmentation": accuracy(metrics, "augment", c, severities),
            }
        )
    frame = pd.DataFrame(rows).set_index("corruption")
    frame.loc["Average"] = frame.mean()
    return frame


def oracle_free_table(config: Mapping, metrics: pd.DataFrame, detector: pd.DataFrame) -> pd.DataFrame:
    """Per stream: how often the classifier picked the right signature, and the accuracy it buys."""
    suffix = variant_suffix(deploy_variant(config))
    rows = []
    for _, d in detector.iterrows():
        c, s = d["corruption"], int(d["severity"])
        oracle = "standard" if c == "none" else f"rws-{c}{suffix}"
        rows.append(
            {
                "stream": "clean" if c == "none" else f"{c} s{s}",
                "picked right (corruption)": d["accuracy_corruption"] * 100,
                "picked right (corruption, severity)": d["accuracy_both"] * 100,
                "per-image (corruption)": d["image_accuracy_corruption"] * 100,
                "λ (adapt)": d["lambda"],
                "standard": accuracy(metrics, "standard", c, [s]),
                "oracle λ=rws.lambda": accuracy(metrics, oracle, c, [s]),
                "oracle, tuned λ": accuracy(metrics, "rws-oracle-tuned", c, [s]),
                "oracle-free": accuracy(metrics, "rws-auto", c, [s]),
            }
        )
    frame = pd.DataFrame(rows).set_index("stream")
    corrupted = frame.drop(index="clean", errors="ignore")
    frame.loc["mean over corrupted streams"] = corrupted.mean()
    return frame


def transfer_table(config: Mapping, metrics: pd.DataFrame) -> pd.DataFrame:
    """Per corruption: the gain of the signatures on their source standard model and on each transfer target."""
    rws = config["rws"]
    severities = list(rws["severities"])
    suffix = variant_suffix(deploy_variant(config))
    rows = []
    for c in rws["corruptions"]:
        row = {"corruption": c}
        base, patched = (
            accuracy(metrics, "standard", c, severities),
            accuracy(metrics, f"rws-{c}{suffix}", c, severities),
        )
        row.update({"standard": base, "standard + RWS": patched, "gain (source)": patched - base})
        for target in transfer_targets(config):
            before = accuracy(metrics, target, c, severities)
            after = accuracy(metrics, f"rws-{c}@{target}", c, severities)
            row.update({target: before, f"{target} + RWS": after, f"gain ({target})": after - before})
        rows.append(row)
    frame = pd.DataFrame(rows).set_index("corruption")
    frame.loc["Average"] = frame.mean()
    clean = {"standard": accuracy(metrics, "standard"), "standard + RWS": float("nan"), "gain (source)": float("nan")}
    for target in transfer_targets(config):
        clean.update(
            {target: accuracy(metrics, target), f"{target} + RWS": float("nan"), f"gain ({target})": float("nan")}
        )
    frame.loc["clean (TA)"] = pd.Series(clean)
    return frame


def _cell(column: str, value) -> str:
    """A cell of an RWS table: byte counts with thousands separators, ratios to 3 decimals, differences
    signed, accuracies to 2 decimals; empty when missing (the Markdown table and the HTML page alike)."""
    if pd.isna(value):
        return ""
    if column in ("storage (bytes)", "n"):
        return f"{int(value):,}"
    if column in ("× standard", "RWS file / checkpoint", "storage (MB)"):
        return f"{value:.3f}"
    if isinstance(value, (float, np.floating)):
        return f"{value:+.2f}" if column.startswith(("Diff", "gain")) else f"{value:.2f}"
    return str(value)


def _markdown(table: pd.DataFrame, title: str, note: str, index_name: str) -> str:
    header = [index_name, *table.columns]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        cells = [str(name), *(_cell(str(column), value) for column, value in row.items())]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", note, ""])


def write_table(
    table: pd.DataFrame, csv_path, md_path, html_path, title: str, note: str, index_name: str
) -> list[Path]:
    """Write an RWS table as CSV (full precision), Markdown and an HTML page for the report (the same cells
    as the Markdown, with the caption :mod:`.captions` gives the page's stem); return the paths."""
    write_text_atomic(csv_path, table.to_csv(float_format="%.6g"))
    write_text_atomic(md_path, _markdown(table, title, note, index_name))
    caption = RWS_REPORT.caption(Path(html_path).stem)
    page = write_table_page(table, html_path, title, note, caption, index_name=index_name, cell=_cell)
    return [Path(csv_path), Path(md_path), page]


# --------------------------------------------------------------------------- figures


def _pretty(corruption: str) -> str:
    """``impulse_noise`` → ``impulse noise``; a compound ``fog+contrast`` → ``fog + contrast``."""
    return corruption.replace("_", " ").replace("+", " + ")


def _variant_text(variant: str, k: int) -> str:
    """What a signature variant keeps: ``all layers``, ``first 5 layers``, ``first 5 layers, 8-bit``."""
    if variant == "all":
        return "all layers"
    if variant == "shallow":
        return f"first {k} layers"
    quantized = parse_variant(variant) or {}
    if "levels" in quantized:
        return f"first {k} layers, {quantized['levels']} levels"
    return f"first {k} layers, {quantized.get('bits', variant)}-bit"


def plot_lambda(config: Mapping, metrics: pd.DataFrame, path) -> list[Path]:
    """Accuracy against λ, one panel per corruption, one line per severity (the paper's Figure 7).

    The panels share one y-range, so a flat curve looks flat next to a steep one.
    """
    rws = config["rws"]
    corruptions, lambdas = list(rws["corruptions"]), list(rws["lambdas"])
    severities = list(rws["eval_severities"])
    colours = sequential(len(severities))
    markers = ("o", "s", "^", "v", "D", "P")
    curves = {
        c: {s: [accuracy(metrics, lambda_name(c, lam), c, [s]) for lam in lambdas] for s in severities}
        for c in corruptions
    }
    clean = {c: [accuracy(metrics, lambda_name(c, lam)) for lam in lambdas] for c in corruptions}
    limits = shared_limits([v for c in corruptions for ys in [*curves[c].values(), clean[c]] for v in ys])
    variant = _variant_text(deploy_variant(config), rws["layers"])
    with house_style():
        width = min(TWO_COLUMNS, 1.75 * len(corruptions) + 0.6)
        fig, axes = plt.subplots(1, len(corruptions), figsize=(width, 2.7), sharey=True, squeeze=False)
        for ax, c in zip(axes[0], corruptions):
            for i, s in enumerate(severities):
                ax.plot(
                    lambdas, curves[c][s], color=colours[i], marker=markers[i % len(markers)], label=f"severity {s}"
                )
            ax.plot(lambdas, clean[c], color="black", linestyle="--", marker="o", markersize=3, label="clean")
            ax.axvline(rws["lambda"], color="0.55", lw=0.8, linestyle=":", label=f"λ of the tables ({rws['lambda']:g})")
            ax.set_title(_pretty(c))
            ax.set_xlabel("λ")
            ax.set_xticks([v for v in lambdas if float(v * 2).is_integer()])
            ax.set_ylim(*limits)
        axes[0][0].set_ylabel("accuracy (%)")
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside upper center", ncol=len(labels), frameon=False)
        n = _n(metrics, lambda_name(corruptions[0], lambdas[0]))
        footnote(fig, f"θ_std + λ·RWS ({variant}); corrupted test split, n={n} images per severity")
    caption = (
        f"Accuracy of the standard model patched with λ times its robust weight signature ({variant}) against λ, "
        f"one panel per corruption (shared y-axis), one line per severity of the corrupted test split "
        f"(n={n} images each), clean accuracy dashed; the dotted line marks λ = {rws['lambda']:g}, the value "
        "the tables use. λ = 0 is the standard model, λ = 1 the expert's shallow layers. The counterpart of "
        "the RWS paper's Figure 7 (Cai et al. 2023): milder corruptions want a smaller λ."
    )
    return save_figure(fig, path, "Robust weight signatures: accuracy against the coefficient λ", caption)


def _in_layer(key: str, layer: str) -> bool:
    """Whether ``key`` belongs to ``layer``: a weight layer, or a residual block (rws.layer_rule reference)."""
    module = key.rpartition(".")[0]
    return module == layer or module.startswith(f"{layer}.")


def layer_norms(sidecars: Mapping[str, Mapping]) -> pd.DataFrame:
    """‖RWS‖ / ‖θ_std‖ per weight layer (weights and biases together) and corruption, from all-layer sidecars."""
    rows = []
    for corruption, meta in sidecars.items():
        for layer in meta["layers"]:
            keys = [k for k, t in meta["tensors"].items() if t["kind"] == "weight" and _in_layer(k, layer)]
            rws = np.sqrt(sum(meta["norms"][k]["rws"] ** 2 for k in keys))
            std = np.sqrt(sum(meta["norms"][k]["standard"] ** 2 for k in keys))
            diff = np.sqrt(sum(meta["norms"][k]["expert_minus_standard"] ** 2 for k in keys))
            rows.append(
                {
                    "corruption": corruption,
                    "layer": layer,
                    "relative_rws": rws / std,
                    "relative_expert_minus_standard": diff / std,
                }
            )
    return pd.DataFrame(rows)


def plot_layer_norms(config: Mapping, sidecars: Mapping[str, Mapping], path) -> list[Path]:
    """Relative weight-difference norm per layer (the paper's Figure 2): mostly in shallow layers?"""
    frame = layer_norms(sidecars)
    layers = list(dict.fromkeys(frame["layer"]))
    x = np.arange(len(layers))
    k = config["rws"]["layers"]
    corruptions = list(dict.fromkeys(frame["corruption"]))
    colours = palette(len(corruptions))
    with house_style():
        fig, ax = plt.subplots(figsize=(min(TWO_COLUMNS, max(4.6, 0.42 * len(layers) + 2.4)), 3.0))
        if k < len(layers):
            ax.axvspan(-0.5, k - 0.5, color="#56B4E9", alpha=0.15, lw=0, label=f"first {k} layers (shallow RWS)")
        for i, corruption in enumerate(corruptions):
            group = frame[frame["corruption"] == corruption].set_index("layer").loc[layers]
            ax.plot(
                x,
                group["relative_rws"],
                color=colours[i],
                lw=1,
                alpha=0.8,
                marker=MARKERS[i % len(MARKERS)],
                markersize=3,
                label=_pretty(corruption),
            )
        mean = frame.groupby("layer")["relative_rws"].mean().loc[layers]
        ax.plot(x, mean, color="black", lw=2.2, marker="o", markersize=4, label="mean")
        ax.set_xticks(x, [name.removeprefix("net.") for name in layers], rotation=45, ha="right")
        ax.set_xlim(-0.5, len(layers) - 0.5)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("weight layer (input → output)")
        ax.set_ylabel("‖RWS‖ / ‖θ_std‖")
        ax.set_title("Relative norm of the robust weight signature per layer")
        legend_outside(ax, title="corruption")
    caption = (
        "Norm of each weight layer's robust weight signature (expert − standard, weights and biases together) "
        "relative to the standard model's weights of that layer, per corruption and their mean, from the "
        f"all-layer signatures; shaded: the first {k} layers that the shallow signature keeps. The counterpart "
        "of the RWS paper's Figure 2 (Cai et al. 2023): fine-tuning to a corruption changes shallow layers most."
    )
    return save_figure(fig, path, "Robust weight signatures: where the signature lives", caption)


def plot_compose(config: Mapping, metrics: pd.DataFrame, path) -> list[Path]:
    """Accuracy of θ_std + λ_a·RWS_a + λ_b·RWS_b on a, b, the compound a+b and clean images (Figure 8).

    The panels share one colour scale (the range of all their cells), each cell is labelled with
    its accuracy in black or white by its colour.
    """
    rws = config["rws"]
    a, b = rws["compose"]
    lambdas = list(rws["compose_lambdas"])
    streams = [a, b, compound_name(a, b), "none"]
    severity = rws["compose_severity"]
    grids = {
        stream: np.array(
            [
                [
                    accuracy(metrics, compose_name(a, la, b, lb), stream, [0 if stream == "none" else severity])
                    for lb in lambdas
                ]
                for la in lambdas
            ]
        )
        for stream in streams
    }
    vmin, vmax = colour_range(np.concatenate([g.ravel() for g in grids.values()]))
    cmap, norm = plt.get_cmap("viridis"), Normalize(vmin, vmax)
    variant = _variant_text(deploy_variant(config), rws["layers"])
    n = _n(metrics, compose_name(a, lambdas[0], b, lambdas[0]))
    with house_style():
        fig, axes = plt.subplots(1, len(streams), figsize=(TWO_COLUMNS, 2.5), sharey=True, squeeze=False)
        for ax, stream in zip(axes[0], streams):
            grid = grids[stream]
            image = ax.imshow(grid, origin="lower", cmap=cmap, norm=norm)
            cells = [(j, i) for i in range(len(lambdas)) for j in range(len(lambdas))]
            annotate_values(ax, cells, [grid[i, j] for j, i in cells], cmap, norm, fontsize=5.5)
            ticks = [f"{v:g}" for v in lambdas]
            ax.set_xticks(range(len(lambdas)), ticks)
            ax.set_yticks(range(len(lambdas)), ticks)
            ax.grid(False)
            ax.set_xlabel(f"λ of RWS[{_pretty(b)}]")
            ax.set_title("clean" if stream == "none" else _pretty(stream))
        axes[0][0].set_ylabel(f"λ of RWS[{_pretty(a)}]")
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, label="accuracy (%)", pad=0.01)
        footnote(
            fig,
            f"θ_std + λ·RWS[{_pretty(a)}] + λ·RWS[{_pretty(b)}] ({variant}); corruptions at severity {severity}; "
            f"n={n} test images per panel",
        )
    caption = (
        f"Two signatures composed, θ_std + λ_a·RWS[{_pretty(a)}] + λ_b·RWS[{_pretty(b)}] ({variant}), on a grid of "
        f"coefficients: accuracy (%) on {_pretty(a)} alone, {_pretty(b)} alone, both applied to the same image "
        f"(severity {severity}) and on clean images, n={n} test images each. One colour scale for all panels "
        f"({vmin:.1f}–{vmax:.1f} %). The counterpart of the RWS paper's Figure 8 (Cai et al. 2023)."
    )
    return save_figure(fig, path, "Robust weight signatures: composing two signatures", caption)


def write_report(
    config: Mapping,
    metrics: pd.DataFrame,
    detector: pd.DataFrame,
    model_paths: Mapping[str, str],
    signature_paths: Mapping[str, Mapping[str, str]],
    classifier_path,
    tables: Mapping[str, str],
    figures: Mapping[str, str],
) -> list[Path]:
    """Every RWS table (CSV + Markdown + HTML page) and figure (PNG + PDF + HTML page)."""
    rws = config["rws"]
    sev = "/".join(map(str, rws["severities"]))
    evalset = f"test split, n={_n(metrics, 'standard')}"
    deploy = deploy_variant(config)
    written = []
    written += write_table(
        table1(config, metrics, model_paths, signature_paths, classifier_path),
        tables["table1_csv"],
        tables["table1_md"],
        tables["table1_html"],
        f"Robust Weight Signatures on {config['dataset']}: storage, TA and RA (Table 1)",
        f"Accuracy in %. TA: clean {evalset}; for RWS rows after removing the patch (TA patched: with it on). "
        f"RA: mean over {', '.join(rws['corruptions'])} at severity {sev}, each corruption with its own "
        f"signature or expert (oracle), λ = {rws['lambda']:g}. Storage: bytes of the .safetensors files kept "
        f"(standard + one file per corruption); RWS file / checkpoint: one signature against the standard "
        f"checkpoint. The oracle-free row adds the corruption classifier. {quantization_note(config)}",
        "method",
    )
    written += write_table(
        table4(config, metrics),
        tables["table4_csv"],
        tables["table4_md"],
        tables["table4_html"],
        f"Per corruption, without and with RWS (Table 4; {variant_label(deploy, rws['layers'])})",
        f"Accuracy in % on the {evalset} at severity {sev}, λ = {rws['lambda']:g}.",
        "corruption",
    )
    written += write_table(
        oracle_free_table(config, metrics, detector),
        tables["oracle_free_csv"],
        tables["oracle_free_md"],
        tables["oracle_free_html"],
        "Oracle-free patching: a corruption classifier picks the signature and λ per batch",
        f"Classifier: logistic regression on per-channel mean/std of the standard model's first "
        f"{rws['layers']} layers, fitted on the adaptation split; batches of {rws['oracle_free']['batch_size']} "
        f"test images from one stream. 'picked right': % of batches. Accuracies in %.",
        "stream",
    )
    written += write_table(
        transfer_table(config, metrics),
        tables["transfer_csv"],
        tables["transfer_md"],
        tables["transfer_html"],
        "Transfer: signatures extracted against `standard` patched onto other standard models",
        f"Accuracy in % at severity {sev} ({deploy}, λ = {rws['lambda']:g}). Targets: "
        + "; ".join(
            f"{name} (seed {rws['transfer']['seed']}, {'its own' if init != 'init' else 'the shared'} initialization)"
            for name, init in transfer_targets(config).items()
        )
        + ".",
        "corruption",
    )
    sidecars = {c: json.loads(Path(p).with_suffix(".json").read_text()) for c, p in signature_paths["all"].items()}
    written += plot_lambda(config, metrics, figures["lambda"])
    written += plot_layer_norms(config, sidecars, figures["layer_norms"])
    written += plot_compose(config, metrics, figures["compose"])
    return written
