"""A run's seeds (config key ``seeds``): what is run once per seed, and where each seed's artifacts go.

Every study runs once per seed, each under its own folder ``results/<dataset>/seed-<s>/`` (models, metrics,
soups, signatures, that seed's tables and figures); the data splits, corrupted copies and shift folders under
``results/<dataset>/data/`` are prepared once, with the first seed. The tables of the whole run
(``results/<dataset>/tables/``: every seed's table as mean ± sd, the findings, the benchmarks) and the
ledger of every seed's rows (``results/<dataset>/metrics/all.tsv``, a ``seed`` column) sit beside them. A
run of one seed has the same layout (``seed-0/``), so adding a seed changes no path.

:class:`~robustsoup.paths.RunPaths` names every artifact with the placeholder ``{seed}`` in its seed's
folder: the rules' ``seed`` wildcard. Snakemake fills it into a rule's inputs, outputs and string params;
:func:`fill_seed` fills it into the params Snakemake leaves as they are (the ``{name: path}`` maps), and
:func:`job_seed` gives the job's config the seed it runs. Torch-free.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError

SEED = "{seed}"  # the rules' wildcard: a seed's folder is seed-{seed}


def resolve_seeds(given: Mapping[str, Any] | None, resolved: dict) -> dict:
    """``resolved`` with ``seeds`` filled in (``[seed]`` when null) and ``seed`` the first seed (the one the
    shared data are prepared with). ``given`` is the config as written: a ``seed`` it states must be the first
    of the ``seeds`` it states, else ConfigError."""
    given = given or {}
    seeds = resolved.get("seeds")
    if seeds is None:
        resolved["seeds"] = [resolved["seed"]]
        return resolved
    if "seed" in given and given.get("seeds") is not None and given["seed"] != seeds[0]:
        raise ConfigError(
            f"config keys 'seed' and 'seeds' disagree: seed is {given['seed']}, seeds is {list(seeds)}. seed is the "
            "single-seed shorthand (seeds: [seed]) and, with seeds given, the first seed (the one the shared "
            "data are prepared with): leave seed out, or list it first in seeds"
        )
    resolved["seeds"], resolved["seed"] = list(seeds), seeds[0]
    return resolved


def seed_folder(root: str, seed: int | str = SEED) -> str:
    """The folder of one seed's artifacts under a run's ``root`` (``results/<dataset>``)."""
    return f"{root}/seed-{seed}"


def for_seeds(paths: Iterable[str], seeds: Iterable[int]) -> list[str]:
    """Every path of ``paths`` once per seed (those without the placeholder once), in seed order."""
    seeds = list(seeds)
    out: list[str] = []
    for path in paths:
        for p in [path.replace(SEED, str(s)) for s in seeds] if SEED in path else [path]:
            if p not in out:
                out.append(p)
    return out


def by_seed(path: str, seeds: Iterable[int]) -> dict[str, str]:
    """``{seed: path}`` of a path of one seed's folder (a rule's ``{name: path}`` input or param)."""
    return {str(s): path.replace(SEED, str(s)) for s in seeds}


def fill_seed(value: Any, seed: str) -> Any:
    """``value`` (a param: a string, or lists and maps of them) with the placeholder filled in."""
    if isinstance(value, str):
        return value.replace(SEED, seed)
    if isinstance(value, Mapping):
        return {k: fill_seed(v, seed) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(fill_seed(v, seed) for v in value)
    return value


def job_seed(config: dict, wildcards: Mapping[str, Any]) -> dict:
    """The config a job runs with: ``seed`` set to its ``seed`` wildcard (a job of one seed's folder); a job
    of the shared data or of the whole run keeps the first seed."""
    if "seed" not in wildcards:
        return config
    seed = int(wildcards["seed"])
    if seed not in config["seeds"]:
        raise ConfigError(f"seed {seed} of this job is not in config key 'seeds' {config['seeds']}")
    return {**config, "seed": seed}


class SeedTables:
    """The whole run over its seeds (rule report_seeds and report_findings): every seed's ledger and tables in,
    the run's ledger (``<root>/metrics/all.tsv``, a ``seed`` column) and each table as mean ± sd out. ``run`` is
    the run's :class:`~robustsoup.paths.RunPaths` (``root``, ``results``, ``seeds``, ``table``)."""

    SUFFIXES = (".csv", ".md", ".html")

    def __init__(self, run: Any) -> None:
        self.run = run

    def ledger(self) -> str:
        return f"{self.run.root}/metrics/all.tsv"

    def ledgers(self) -> dict[str, str]:
        """{seed: that seed's metrics/all.tsv}."""
        return by_seed(f"{self.run.results}/metrics/all.tsv", self.run.seeds)

    def names(self) -> list[str]:
        """The tables every seed writes (their CSV under the seed's tables/), in the run's order."""
        folder = f"{self.run.results}/tables/"
        return [
            p.removeprefix(folder).removesuffix(".csv")
            for p in self.run.seeded_outputs()
            if p.startswith(folder) and p.endswith(".csv")
        ]

    def inputs(self) -> dict[str, dict[str, str]]:
        """{table: {seed: its CSV}} (rule report_seeds' param)."""
        return {name: by_seed(self.run.table(name, ".csv"), self.run.seeds) for name in self.names()}

    def input_files(self) -> list[str]:
        return [*self.ledgers().values(), *(p for seeds in self.inputs().values() for p in seeds.values())]

    def tables(self) -> dict[str, dict[str, str]]:
        """{table: {csv, md, html: the whole run's file}} (rule report_seeds' param)."""
        return {n: {s[1:]: self.run.table(n, s, True) for s in self.SUFFIXES} for n in self.names()}

    def table_files(self) -> list[str]:
        return [p for files in self.tables().values() for p in files.values()]

    def outputs(self) -> list[str]:
        return [self.ledger(), *self.table_files()]

    def findings_inputs(self) -> list[str]:
        """Every seed's ledger and per-point files (rule report_findings' inputs)."""
        return [*self.ledgers().values(), *for_seeds(self.run.findings_inputs(), self.run.seeds)]
