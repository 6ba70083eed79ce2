"""The findings table of a results folder: every study's claims (F1–F5) over one ledger and its per-point files.

The rule ``report_findings`` and ``robustsoup findings RESULTS_DIR`` both call :func:`findings_table` on
the folder, so a user who edits or merges runs (``metrics/all.tsv``) recomputes the very table the run
wrote. The folder's layout is the run's (:class:`~robustsoup.paths.RunPaths`, from the config it ran with:
``config.resolved.yaml``): one folder ``seed-<s>`` per seed of ``seeds``, each a run whose claims the table
combines (:func:`robustsoup.report.findings.findings_rows`); the statistics are :mod:`robustsoup.report.findings`, each study's claims its
own ``findings`` module. Torch-free.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .config import ConfigError
from .distill.findings import distill_findings
from .lp.findings import lp_findings
from .paths import RunPaths
from .report.findings import Claim, Ledger, PointStore, findings_frame, write_findings
from .run_config import load_config_file
from .rws.findings import rws_findings
from .soups.findings import soup_line_findings, soups_findings

RESOLVED_CONFIG = "config.resolved.yaml"


def _rebase(run: RunPaths, folder: Path, path: str) -> Path:
    """A path of the run's layout (``results/<dataset>/…``) inside ``folder``."""
    return folder / Path(path).relative_to(run.results)


def run_points(run: RunPaths, folder: Path) -> PointStore:
    """Every per-point file of the run's layout in ``folder`` (files not there count as missing)."""
    store = PointStore()
    for (model, threat), path in run.evaluation_points().items():
        store.add_single(_rebase(run, folder, path), model, "test", threat)
    for path in run.keyed_points():
        store.add_keyed(_rebase(run, folder, path))
    return store


def run_sidecars(run: RunPaths, folder: Path) -> dict[str, dict]:
    """{model: its sidecar} of the trained models whose costs the findings quote (those present)."""
    names = run.base_models + run.references + (list(run.distill.MODELS) if run.distill is not None else [])
    found = {}
    for name in names:
        path = _rebase(run, folder, run.model(name, ".json"))
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def results_config(results: str | Path) -> dict:
    """The config a run's folder ``results`` (``results/<dataset>``) ran with (its ``config.resolved.yaml``)."""
    try:
        return load_config_file(Path(results) / RESOLVED_CONFIG)
    except ConfigError as error:
        raise ConfigError(
            f"{error}. A results folder holds the config its run resolved ({RESOLVED_CONFIG}); pass the "
            "folder results/<dataset> of a run"
        ) from None


def run_claims(results: str | Path, config: Mapping, seed: int) -> tuple[str, list[Claim]]:
    """(seed, the claims F1–F5) of one seed's folder ``results`` (``results/<dataset>/seed-<s>``) of a run of
    ``config``, from its ``metrics/all.tsv`` and per-point files."""
    folder = Path(results)
    config = {**config, "seed": seed}
    run = RunPaths(config, seed)
    ledger_path = _rebase(run, folder, f"{run.results}/metrics/all.tsv")
    if not ledger_path.is_file():
        raise FileNotFoundError(
            f"{ledger_path} does not exist: the findings are computed from a run's metrics/all.tsv (rule "
            "report_lp writes it). Run the workflow first, or pass the folder results/<dataset> of a run."
        )
    ledger = Ledger(pd.read_csv(ledger_path, sep="\t", keep_default_na=False, na_values=[""]))
    points, sidecars = run_points(run, folder), run_sidecars(run, folder)
    claims = lp_findings(config, ledger, points, sidecars)
    claims += soup_line_findings(config, ledger, points)
    claims += soups_findings(config, ledger, points)
    claims += rws_findings(config, ledger, points)
    claims += distill_findings(config, ledger, points, sidecars)
    return str(config["seed"]), claims


def findings_table(results: str | Path | Sequence[str | Path], config: Mapping | None = None) -> pd.DataFrame:
    """The findings table of one run's folder (``results/<dataset>``: each seed's folder of its ``seeds``), or
    of several runs' (the same config but their seeds); effects are averaged over the seeds and the intervals
    carry their spread. ``config`` defaults to each folder's ``config.resolved.yaml``."""
    roots = [results] if isinstance(results, str | Path) else list(results)
    folders = []
    for root in roots:
        resolved = dict(config) if config is not None else results_config(root)
        folders += [(Path(root) / f"seed-{s}", resolved, s) for s in resolved["seeds"]]
    per_seed: dict[str, list[Claim]] = {}
    for folder, resolved, s in folders:
        seed, claims = run_claims(folder, resolved, s)
        if seed in per_seed:
            raise ValueError(
                f"two results folders of seed {seed} ({folder} and another): the findings combine one run per "
                "seed; pass each seed's folder once"
            )
        per_seed[seed] = claims
    return findings_frame(per_seed)


def report_findings(config: Mapping, csv_path, md_path, html_path) -> pd.DataFrame:
    """Rule ``report_findings``: :func:`findings_table` of the run's folder (``results/<dataset>`` under the
    working directory) as CSV, Markdown and HTML page."""
    table = findings_table(RunPaths(config).root, config)
    write_findings(table, csv_path, md_path, html_path)
    return table
