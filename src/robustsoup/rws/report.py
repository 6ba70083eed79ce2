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

from ..io import write_text_atomic
from ..report.figures import save_figure
from .config import (
    compose_name,
    compound_name,
    deploy_variant,
    lambda_name,
    transfer_targets,
    variant_suffix,
    variants,
)
from .signatures import storage_bytes

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


def variant_label(variant: str, k: int) -> str:
    if variant == "all":
        return "Standard + RWS (all layers)"
    if variant == "shallow":
        return f"Standard + RWS (shallow {k})"
    return f"Standard + RWS (shallow {k}, {variant.removesuffix('bit')}-bit)"


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


def _markdown(table: pd.DataFrame, title: str, note: str, index_name: str) -> str:
    header = [index_name, *table.columns]
    lines = [f"# {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in table.iterrows():
        cells = [str(name)]
        for column, value in row.items():
            if pd.isna(value):
                cells.append("")
            elif column in ("storage (bytes)", "n"):
                cells.append(f"{int(value):,}")
            elif column in ("× standard", "RWS file / checkpoint") or column == "storage (MB)":
                cells.append(f"{value:.3f}")
            elif isinstance(value, (float, np.floating)):
                cells.append(f"{value:+.2f}" if column.startswith(("Diff", "gain")) else f"{value:.2f}")
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + ["", note, ""])


def write_table(table: pd.DataFrame, csv_path, md_path, title: str, note: str, index_name: str) -> list[Path]:
    write_text_atomic(csv_path, table.to_csv(float_format="%.6g"))
    write_text_atomic(md_path, _markdown(table, title, note, index_name))
    return [Path(csv_path), Path(md_path)]


# --------------------------------------------------------------------------- figures


def plot_lambda(config: Mapping, metrics: pd.DataFrame, path) -> list[Path]:
    """Accuracy against λ, one panel per corruption, one line per severity (the paper's Figure 7)."""
    rws = config["rws"]
    corruptions, lambdas = list(rws["corruptions"]), list(rws["lambdas"])
    fig, axes = plt.subplots(1, len(corruptions), figsize=(3.2 * len(corruptions), 3.2), dpi=150, squeeze=False)
    for ax, c in zip(axes[0], corruptions):
        for i, s in enumerate(rws["eval_severities"]):
            ys = [accuracy(metrics, lambda_name(c, lam), c, [s]) for lam in lambdas]
            ax.plot(
                lambdas,
                ys,
                "-o",
                color=plt.cm.viridis(i / max(1, len(rws["eval_severities"]) - 1)),
                markersize=3,
                label=f"severity {s}",
            )
        ax.plot(lambdas, [accuracy(metrics, lambda_name(c, lam)) for lam in lambdas], "k--", label="clean")
        ax.axvline(1.0, color="0.7", lw=0.8)
        ax.set_title(c, fontsize=9)
        ax.set_xlabel("λ")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="best")
    n = _n(metrics, lambda_name(corruptions[0], lambdas[0]))
    fig.suptitle(f"Standard + λ·RWS ({deploy_variant(config)}), n={n} test images", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def layer_norms(sidecars: Mapping[str, Mapping]) -> pd.DataFrame:
    """‖RWS‖ / ‖θ_std‖ per weight layer (weights and biases together) and corruption, from all-layer sidecars."""
    rows = []
    for corruption, meta in sidecars.items():
        for layer in meta["layers"]:
            keys = [k for k, t in meta["tensors"].items() if t["kind"] == "weight" and k.rpartition(".")[0] == layer]
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
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(layers) + 2), 3.6), dpi=150)
    for corruption, group in frame.groupby("corruption", sort=False):
        ax.plot(x, group.set_index("layer").loc[layers, "relative_rws"], "-", alpha=0.45, lw=1, label=corruption)
    mean = frame.groupby("layer")["relative_rws"].mean().loc[layers]
    ax.plot(x, mean, "k-o", lw=2, markersize=4, label="mean")
    k = config["rws"]["layers"]
    if k < len(layers):
        ax.axvspan(-0.5, k - 0.5, color="C2", alpha=0.08, label=f"shallow {k}")
    ax.set_xticks(x)
    ax.set_xticklabels([name.removeprefix("net.") for name in layers], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("‖RWS‖ / ‖θ_std‖")
    ax.set_title("Relative norm of the robust weight signature per layer", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_compose(config: Mapping, metrics: pd.DataFrame, path) -> list[Path]:
    """Accuracy of θ_std + λ_a·RWS_a + λ_b·RWS_b on a, b, the compound a+b and clean images (Figure 8)."""
    rws = config["rws"]
    a, b = rws["compose"]
    lambdas = list(rws["compose_lambdas"])
    streams = [a, b, compound_name(a, b), "none"]
    severity = rws["compose_severity"]
    fig, axes = plt.subplots(
        1, len(streams), figsize=(3.0 * len(streams) + 1, 3.2), dpi=150, squeeze=False, layout="constrained"
    )
    for ax, stream in zip(axes[0], streams):
        grid = np.array(
            [
                [
                    accuracy(metrics, compose_name(a, la, b, lb), stream, [0 if stream == "none" else severity])
                    for lb in lambdas
                ]
                for la in lambdas
            ]
        )
        image = ax.imshow(grid, origin="lower", vmin=0, vmax=100, cmap="viridis")
        for i in range(len(lambdas)):
            for j in range(len(lambdas)):
                ax.text(
                    j,
                    i,
                    f"{grid[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="w" if grid[i, j] < 60 else "k",
                )
        ax.set_xticks(range(len(lambdas)))
        ax.set_xticklabels([f"{v:g}" for v in lambdas], fontsize=7)
        ax.set_yticks(range(len(lambdas)))
        ax.set_yticklabels([f"{v:g}" for v in lambdas], fontsize=7)
        ax.set_xlabel(f"λ {b}", fontsize=8)
        ax.set_title("clean" if stream == "none" else f"{stream} (s{severity})", fontsize=8)
    axes[0][0].set_ylabel(f"λ {a}", fontsize=8)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="accuracy (%)")
    fig.suptitle(
        f"θ_std + λ·RWS[{a}] + λ·RWS[{b}] ({deploy_variant(config)}), "
        f"n={_n(metrics, compose_name(a, lambdas[0], b, lambdas[0]))} test images",
        fontsize=9,
    )
    return save_figure(fig, path)


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
    """Every RWS table (CSV + Markdown) and figure (PNG + PDF)."""
    rws = config["rws"]
    sev = "/".join(map(str, rws["severities"]))
    evalset = f"test split, n={_n(metrics, 'standard')}"
    deploy = deploy_variant(config)
    written = []
    written += write_table(
        table1(config, metrics, model_paths, signature_paths, classifier_path),
        tables["table1_csv"],
        tables["table1_md"],
        f"Robust Weight Signatures on {config['dataset']}: storage, TA and RA (Table 1)",
        f"Accuracy in %. TA: clean {evalset}; for RWS rows after removing the patch (TA patched: with it on). "
        f"RA: mean over {', '.join(rws['corruptions'])} at severity {sev}, each corruption with its own "
        f"signature or expert (oracle), λ = {rws['lambda']:g}. Storage: bytes of the .safetensors files kept "
        f"(standard + one file per corruption); RWS file / checkpoint: one signature against the standard "
        f"checkpoint. The oracle-free row adds the corruption classifier.",
        "method",
    )
    written += write_table(
        table4(config, metrics),
        tables["table4_csv"],
        tables["table4_md"],
        f"Per corruption, without and with RWS (Table 4; {deploy}, shallow {rws['layers']})",
        f"Accuracy in % on the {evalset} at severity {sev}, λ = {rws['lambda']:g}.",
        "corruption",
    )
    written += write_table(
        oracle_free_table(config, metrics, detector),
        tables["oracle_free_csv"],
        tables["oracle_free_md"],
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
