"""Every artifact of one run: its name and its path under ``results/<dataset>/``.

The workflow builds one :class:`RunPaths` from the resolved config
(:func:`robustsoup.run_config.resolve_config`); the ``.smk`` files are getters
over it, and every rule hands its script each path by name (inputs, outputs
and ``params``), so no script rebuilds a name from a path. Each rule's
``rerun`` param (:meth:`RunPaths.rerun`) is declared beside the rule's owner
and dispatched by :mod:`robustsoup.rerun`; the resources a rule asks for and
the parse-time checks of the machine are :mod:`robustsoup.resources`'.

Torch-free: every job, SLURM jobs included, parses the Snakefile.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .config import IMAGEFOLDER, ConfigError, base_model_names, dataset_name, parent_name, reference_names
from .data import get_dataset_spec, part_dir, shift_parts, split_paths
from .data.imagefolder import statistics_from_cache
from .data.rerun import SPLITS_CACHE_KEYS
from .distill.config import DISTILL_MODELS, MULTIHEAD
from .naming import ZOO_PREFIX
from .rerun import rerun_keys
from .rws.config import deploy_variant, quantized_variants, transfer_targets, variant_suffix, variants
from .seeds import SEED, SeedTables, for_seeds, seed_folder
from .soups.grid import grid_from_config

# What the report writes of every table and figure: the HTML page is what Snakemake's report shows inline.
TABLE_SUFFIXES = (".csv", ".md", ".html")
# The keyed per-point results a stage writes beside its tidy rows (robustsoup.points.write_keyed_points).
POINTS_SUFFIX = ".points.tsv.gz"
FIGURE_SUFFIXES = (".png", ".pdf", ".html")


def alternatives(names: Sequence[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


class RunPaths:
    """Names and paths of one run's artifacts (see the Snakefile's header for the layout): the shared data and
    the whole run's tables under ``root``, each seed's artifacts under ``results`` (``seed``: the rules'
    ``{seed}`` wildcard, or one seed's; :mod:`robustsoup.seeds`)."""

    def __init__(self, config: Mapping[str, Any], seed: int | str = SEED) -> None:
        self.config, self.seed, self.seeds = config, seed, list(config.get("seeds") or [config["seed"]])
        self.dataset = dataset_name(config)  # data.name for an ImageFolder
        self.root = f"results/{self.dataset}"
        self.results, self.over_seeds = seed_folder(self.root, seed), SeedTables(self)
        self.parent = parent_name(config)
        self.targets = list(config["finetune"])
        self.base_models = base_model_names(config)
        self.references = reference_names(config)  # from-scratch models: evaluated, never a soup ingredient
        self.soups = {soup.id: soup for soup in grid_from_config(config)}
        self.all_models = self.base_models + self.references + list(self.soups)
        data = config["data"]
        cache = {k: data[k] for k in SPLITS_CACHE_KEYS}
        subset = {"train_per_class": data["train_per_class"]}  # a small subset is decoded, not a file list
        self.data = {s: str(p) for s, p in split_paths(self.dataset, f"{self.root}/data", **cache, **subset).items()}
        self.shifts = {
            shift: {
                part: {
                    s: str(p)
                    for s, p in split_paths(shift, part_dir(self.shift_dir(shift), part), part=part, **cache).items()
                }
                for part in shift_parts(shift, data["corruptions"], data["severities"])
            }
            for shift in data["shifts"]
        }
        self.corruptions = list(data["corruptions"])
        self.severities = list(data["severities"])
        self.corrupted_from = self._corrupted_source(data)
        self.rws = RwsPaths(self, config) if config["rws"]["enabled"] else None
        self.distill = DistillPaths(self) if config["distill"]["enabled"] else None
        if config["dataset"] == IMAGEFOLDER:  # the training images' statistics, once prepare_data wrote them
            statistics_from_cache(get_dataset_spec(self.dataset), self.data["train"])

    # ------------------------------------------------------------------ data
    def shift_dir(self, shift: str) -> str:
        return f"{self.root}/data/{shift}"

    def shift_splits(self, split: str) -> dict[str, dict[str, str]]:
        """``{shift: {part: its <split> file}}`` of every configured shift (``data.shifts``): what
        select_soups (adapt) and evaluate_soups_shifts (test) read, handed to the script as a param."""
        return {shift: {part: files[split] for part, files in parts.items()} for shift, parts in self.shifts.items()}

    def shift_dirs(self) -> list[str]:
        """The folder prepare_shift writes of every configured shift (its ``directory`` output, so the
        rule input of select_soups and evaluate_soups_shifts; the files in it come as :meth:`shift_splits`)."""
        return [self.shift_dir(shift) for shift in self.shifts]

    def shift_outputs(self, shift: str) -> list[str]:
        return [path for splits in self.shifts[shift].values() for path in splits.values()]

    def _corrupted_source(self, data: Mapping[str, Any]) -> str | None:
        """The on-disk ImageNet-C that stands in for generated corrupted copies (``data.corrupted_from:
        imagenet-c``), else None. Its files are found by the names of the split's images, so the adapt
        and test splits must be file lists of ImageNet validation images."""
        source = data["corrupted_from"]
        if source == "generate":
            return None
        decoded = [s for s in ("adapt", "test") if not self.data[s].endswith(".tsv")]
        base = "imagenet" if source == "imagenet-c" else IMAGEFOLDER  # imagefolder-c: an ImageFolder's copies
        if self.config["dataset"] != base or source not in data["shifts"] or decoded:
            raise ConfigError(
                f"config key 'data.corrupted_from': {source} reads the corrupted copies of the adapt and test "
                f"splits from the on-disk {source} by file name, so it needs dataset: {base}, "
                f"data.shifts.{source} (its folder) and file-list adapt and test splits; found dataset "
                f"{self.dataset}, shifts {sorted(data['shifts'])}, decoded splits {decoded}. Set "
                "data.corrupted_from: generate (corrupt_split writes the copies), or fix those keys "
                "(data.cache_max_images below the split sizes keeps them file lists)."
            )
        return str(data["shifts"][source])

    def corrupted_output(self, split: str) -> str:
        """The folder rule corrupt_split writes the split's corrupted copies to."""
        return f"{self.root}/data/corrupted/{split}"

    def corrupted_dir(self, split: str) -> str:
        """The folder of the split's corrupted copies: written by corrupt_split (Hendrycks' arrays for a
        decoded split, the ImageNet-C layout for a file list), or the on-disk ImageNet-C
        (``data.corrupted_from: imagenet-c``)."""
        return self.corrupted_from or self.corrupted_output(split)

    def corrupted_input(self, split: str, name: str = "corrupted") -> dict[str, str]:
        """``{name: folder of the split's corrupted copies}`` (a named input)."""
        return {name: self.corrupted_dir(split)}

    # ------------------------------------------------------------------ files from outside the run
    def external_weights(self, section: str = "model") -> dict[str, str]:
        """{config key: file} of the pretrained weights a model section starts from: its ``weights``, or for
        ``robustbench:<name>`` the zoo file ``{model_dir}/{dataset}/{zoo_threat}/{name}.pt``. They are the
        rules' inputs, so a replaced file reruns what was trained from it."""
        spec = self.config["model"] if section == "model" else self.config["distill"][section]
        if spec.get("weights"):
            return {f"{section}.weights": spec["weights"]}
        name = str(spec["architecture"])
        if section == "model" and name.startswith(ZOO_PREFIX):
            zoo = f"{spec['model_dir']}/{self.dataset}/{spec['zoo_threat']}/{name.removeprefix(ZOO_PREFIX)}.pt"
            return {"model.model_dir": zoo}
        return {}

    # ------------------------------------------------------------------ models and metrics
    def model(self, name: str, suffix: str = ".safetensors") -> str:
        return f"{self.results}/models/{name}{suffix}"

    def models(self, names: Sequence[str]) -> dict[str, str]:
        """{name: checkpoint} of ``names``, sorted by name: a script receives the names with the paths, and a
        reordering of the config's keys changes no param (the stages order models by the config)."""
        return {name: self.model(name) for name in sorted(names)}

    def soup_ingredients(self, soup: str) -> dict[str, str]:
        """{base model: checkpoint} of the models a soup mixes with a non-zero weight."""
        return self.models([m for m, w in self.soups[soup].weights if w != 0])

    def soup_weights(self, soup: str) -> dict[str, float]:
        return {m: w for m, w in self.soups[soup].weights if w != 0}

    def soup_mixtures(self) -> dict[str, str]:
        """{soup id: its weights as text} in grid order (report_lp's table names each soup's mixture)."""
        return {sid: soup.mixture() for sid, soup in self.soups.items()}

    def evaluation_outputs(self, model: str) -> dict[str, str]:
        """Named outputs of evaluate_model: ``<threat>_rows`` and ``<threat>_points`` for clean and every norm."""
        return self._evaluation_files(f"{self.results}/metrics/{model}/test")

    def _evaluation_files(self, folder: str) -> dict[str, str]:
        return {
            f"{t}_{kind}": f"{folder}/{t}{suffix}"
            for t in ["clean", *self.config["evaluate"]["threats"]]
            for kind, suffix in (("rows", ".tsv"), ("points", ".points.tsv"))
        }

    def evaluated_models(self, sharded: bool) -> str:
        """The ``model`` constraint of evaluate_model (``sharded=False``) or of evaluate_model_shard and
        merge_model_shards (``True``): every model for the rules ``evaluate.shards`` selects, none for the
        others, so exactly one rule writes a model's evaluation."""
        return alternatives(self.all_models if (self.config["evaluate"]["shards"] > 1) == sharded else [])

    def evaluation_shard_outputs(self, model: str, shard: str) -> dict[str, str]:
        """Named outputs of evaluate_model_shard: those of :meth:`evaluation_outputs` for shard ``shard`` of
        ``evaluate.shards`` (S), under ``metrics/<model>/test/shards/<shard>-of-<S>/``."""
        count = self.config["evaluate"]["shards"]
        return self._evaluation_files(f"{self.results}/metrics/{model}/test/shards/{shard}-of-{count}")

    def evaluation_shards(self, model: str) -> dict[str, list[str]]:
        """Named inputs of merge_model_shards: each output name of evaluate_model_shard → its file of every
        shard, in shard order."""
        parts = [self.evaluation_shard_outputs(model, str(s)) for s in range(self.config["evaluate"]["shards"])]
        return {name: [part[name] for part in parts] for name in self.evaluation_outputs(model)}

    def metric_files(self) -> list[str]:
        return [path for m in self.all_models for path in self.evaluation_outputs(m).values()]

    def table(self, name: str, suffix: str = ".md", run: bool = False) -> str:
        """A seed's table; ``run``: the whole run's (every seed's as mean ± sd, the findings, the benchmarks)."""
        return f"{self.root if run else self.results}/tables/{name}{suffix}"

    def figure(self, name: str, suffix: str = ".png") -> str:
        return f"{self.results}/figures/{name}{suffix}"

    def soup_line_figure(self, a: str, b: str, suffix: str = ".png") -> str:
        """The figure of the soups on the line from model ``a`` to ``b`` (.png, .pdf or its .html page)."""
        return self.figure(f"soup_line_{a}_{b}", suffix)

    def soup_line_figures(self, suffix: str = ".png") -> list[str]:
        return [self.soup_line_figure(a, b, suffix) for a, b in self.config["soups"]["lines"]]

    def accuracy_tables(self) -> list[str]:
        """The accuracy table as CSV, Markdown and the HTML page Snakemake's report shows."""
        return [self.table("accuracy", suffix) for suffix in TABLE_SUFFIXES]

    def soups_points(self) -> str:
        """The per-point results of evaluate_soups_shifts (every model on every shift; the findings pair them)."""
        return f"{self.results}/metrics/soups/shifts{POINTS_SUFFIX}"

    def ternary_file(self) -> str | None:
        """The ternary's metrics when soups.ternary is enabled."""
        return f"{self.results}/metrics/soups/ternary.tsv" if self.config["soups"]["ternary"]["enabled"] else None

    def ternary_metrics(self) -> list[str]:
        return [self.ternary_file()] if self.ternary_file() else []

    def ternary_input(self) -> dict[str, str]:
        """``{"ternary": its metrics}`` when soups.ternary is enabled, else ``{}`` (an optional named input)."""
        return {"ternary": self.ternary_file()} if self.ternary_file() else {}

    def soups_figure_names(self) -> list[str]:
        return ["soup_composition"] + (["soup_ternary"] if self.config["soups"]["ternary"]["enabled"] else [])

    def soups_figures(self, suffix: str = ".png") -> list[str]:
        return list(self.soups_figures_by_name(suffix).values())

    def soups_figures_by_name(self, suffix: str = ".png") -> dict[str, str]:
        return {n: self.figure(n, suffix) for n in self.soups_figure_names()}

    def gathered_studies(self) -> dict[str, str]:
        """Study name → its gathered metric file, merged into metrics/all.tsv."""
        studies = {"soups-shifts": f"{self.results}/metrics/soups/shifts.tsv"}
        if self.config["soups"]["ternary"]["enabled"]:
            studies["soups-ternary"] = f"{self.results}/metrics/soups/ternary.tsv"
        if self.rws is not None:
            studies["rws"] = f"{self.results}/metrics/rws.tsv"
        if self.distill is not None:
            studies["distill"] = f"{self.results}/metrics/distill.tsv"
        return studies

    def report_files(self) -> list[str]:
        """The tables (CSV, Markdown, HTML page) and figures (PNG, PDF, HTML page) of robust fine-tuning and
        soups (what `rule all` lists first)."""
        return [
            *self.accuracy_tables(),
            *[self.table("soups_shifts", suffix) for suffix in TABLE_SUFFIXES],
            *[
                path
                for suffix in FIGURE_SUFFIXES
                for path in (*self.soup_line_figures(suffix), *self.soups_figures(suffix))
            ],
        ]

    def evaluation_points(self) -> dict[tuple[str, str], str]:
        """{(model, threat): its per-point file} of every model evaluation (threat ``none``: clean)."""
        return {
            (model, "none" if name == "clean_points" else name.removesuffix("_points")): path
            for model in self.all_models
            for name, path in self.evaluation_outputs(model).items()
            if name.endswith("_points")
        }

    def keyed_points(self) -> list[str]:
        """The keyed per-point files: the soups' shifts', and the RWS and distillation evaluations' when they run."""
        keyed = [self.soups_points()]
        if self.rws is not None:
            keyed += [self.rws.points("models", m) for m in self.rws.evaluated]
            keyed += [self.rws.points("patched", v) for v in self.rws.variants]
        if self.distill is not None:
            keyed += self.distill.metric_files(self.distill.POINTS)
        return keyed

    def findings_inputs(self) -> list[str]:
        """The per-point files report_findings pairs (beside metrics/all.tsv)."""
        return [*self.evaluation_points().values(), *self.keyed_points()]

    def seeded_outputs(self) -> list[str]:
        """Every study's gathered metrics, tables and figures of one seed (of ``seed``)."""
        rws = self.rws.outputs() if self.rws else []
        distill = self.distill.outputs() if self.distill else []
        return [f"{self.results}/metrics/all.tsv", *self.report_files(), *rws, *distill]

    def study_outputs(self) -> list[str]:
        """Every seed's :meth:`seeded_outputs`, the whole run's ledger and tables, and the findings table (what
        the benchmark summary waits for)."""
        findings = [self.table("findings", suffix, run=True) for suffix in TABLE_SUFFIXES]
        return [*for_seeds(self.seeded_outputs(), self.seeds), *self.over_seeds.outputs(), *findings]

    def final_outputs(self) -> list[str]:
        """Everything `rule all` asks for: the studies' outputs and the benchmark table of the run (its page,
        then the CSV last)."""
        return [*self.study_outputs(), self.table("benchmarks", ".html", True), self.table("benchmarks", ".csv", True)]

    def report_locations(self, asked: Sequence[str] = (), exists=os.path.exists) -> str:
        """The run's closing message: the tables and figures that exist (never one that does not), and,
        when only ``asked`` (targets, ``--until`` …; see :func:`asked_targets`) was run, says so."""
        listed = [p for p in self.final_outputs()[1:] if p.endswith((".md", ".png", ".csv"))]
        present = [p for p in listed if exists(p)]
        if asked:
            lines = ["", f"robustsoup: done with what was asked for ({', '.join(asked)}), not the whole run."]
        else:
            lines = ["", "robustsoup: the run is complete."]
        if present:
            lines += ["Tables and figures:", *(f"  {p}" for p in present)]
        metrics = f"{self.root}/metrics/all.tsv"
        if exists(metrics):
            lines.append(f"  metrics (tidy rows): {metrics}")
        if not present:
            lines.append(f"No table or figure is written yet; `snakemake` with no target writes all {len(listed)}.")
        elif len(present) < len(listed):
            lines.append(
                f"{len(listed) - len(present)} of {len(listed)} tables and figures are not written yet; "
                "`snakemake` with no target writes them all."
            )
        return "\n".join([*lines, ""])

    # ------------------------------------------------------------------ rerun triggers
    def rerun(self, rule: str, wildcard: str | None = None) -> str:
        """Canonical JSON of the config keys rule ``rule``'s outputs depend on (its ``rerun`` param), as its
        owner declares them (:mod:`robustsoup.rerun` dispatches)."""
        return rerun_keys(self.config, self.dataset, self.seed, rule, wildcard)


class RwsPaths:
    """Robust Weight Signatures: models under models/rws/, signatures under rws/, metrics under metrics/rws/."""

    TABLES = ("table1", "table4", "oracle_free", "transfer")
    FIGURES = ("lambda", "layer_norms", "compose")

    def __init__(self, run: RunPaths, config: Mapping[str, Any]) -> None:
        self.run = run
        self.spec = config["rws"]
        self.corruptions = list(self.spec["corruptions"])
        self.variants = variants(config)  # all, shallow, <L>levels, <b>bit …
        self.quantized_variants = quantized_variants(config)  # variant → its levels or bits and range
        self.deploy = deploy_variant(config)
        self.targets = transfer_targets(config)  # transfer target → its initialization
        self.finetuned = ["standard", "augment", *self.targets]
        self.experts = [f"expert-{c}" for c in self.corruptions]
        self.evaluated = ["standard", "augment", *self.experts]
        self.metrics = f"{run.results}/metrics/rws"
        self.folder = f"{run.results}/rws"

    def model(self, name: str, suffix: str = ".safetensors") -> str:
        return f"{self.run.results}/models/rws/{name}{suffix}"

    def models(self, names: Sequence[str], suffix: str = ".safetensors") -> dict[str, str]:
        return {name: self.model(name, suffix) for name in names}

    def signature(self, corruption: str, variant: str, suffix: str = ".safetensors") -> str:
        return f"{self.folder}/{corruption}{variant_suffix(variant)}{suffix}"

    def signatures(self, variant: str, corruptions: Sequence[str] | None = None, suffix=".safetensors") -> dict:
        """{corruption: signature file} of one variant."""
        return {c: self.signature(c, variant, suffix) for c in (corruptions or self.corruptions)}

    def quantized(self, suffix: str = ".safetensors") -> list[str]:
        return [self.signature(c, v, suffix) for c in self.corruptions for v in self.quantized_variants]

    def quantized_outputs(self) -> dict[str, dict[str, str]]:
        """{variant: {corruption: signature}} of what quantize_rws writes."""
        return {v: self.signatures(v) for v in self.quantized_variants}

    def expert_validation(self) -> dict[str, str]:
        """Named inputs of train_expert that choose its epoch (``rws.expert_selection: best``): the adapt split
        and its corrupted copies; ``{}`` when the expert keeps its last epoch."""
        if self.spec["expert_selection"] != "best":
            return {}
        return {"adapt": self.run.data["adapt"], **self.run.corrupted_input("adapt", "validation")}

    def finetune_init(self, model: str) -> str:
        """The initialization a fine-tuned RWS model starts from (a transfer target's own init, else init)."""
        return self.targets.get(model, "init")

    def points(self, kind: str, name: str) -> str:
        """The per-point results of an RWS evaluation: ``kind`` models (a baseline) or patched (a variant)."""
        return f"{self.metrics}/{kind}/{name}{POINTS_SUFFIX}"

    def metric_files(self) -> list[str]:
        return [
            *[f"{self.metrics}/models/{m}.tsv" for m in self.evaluated],
            *[f"{self.metrics}/patched/{v}.tsv" for v in self.variants],
            *[f"{self.metrics}/{name}.tsv" for name in ("lambda", "compose", "oracle_free", "transfer")],
        ]

    def table(self, name: str, kind: str) -> str:
        """An RWS table (``TABLES``) as ``csv``, ``md`` or ``html`` (its page in the report)."""
        return self.run.table(f"rws_{name}", f".{kind}")

    def tables(self) -> dict[str, str]:
        """{``<table>_<kind>``: file} of every RWS table, CSV, Markdown and HTML page."""
        return {f"{name}_{s[1:]}": self.table(name, s[1:]) for name in self.TABLES for s in TABLE_SUFFIXES}

    def figures(self, suffix: str = ".png") -> dict[str, str]:
        return {name: self.run.figure(f"rws_{name}", suffix) for name in self.FIGURES}

    def outputs(self) -> list[str]:
        figures = [path for suffix in FIGURE_SUFFIXES for path in self.figures(suffix).values()]
        return [f"{self.run.results}/metrics/rws.tsv", *self.tables().values(), *figures]


class DistillPaths:
    """Robust distillation: checkpoints under models/, metrics under metrics/distill/."""

    MODELS = DISTILL_MODELS
    POINTS = POINTS_SUFFIX  # evaluate_distilled's per-point results: metrics/distill/<model><POINTS>

    def __init__(self, run: RunPaths) -> None:
        self.run = run
        self.spec = run.config["distill"]

    def metric_files(self, suffix: str = ".tsv") -> list[str]:
        return [f"{self.run.results}/metrics/distill/{m}{suffix}" for m in self.MODELS]

    def tables(self) -> list[str]:
        """The distillation table as CSV, Markdown and its HTML page."""
        return [self.run.table("distill", suffix) for suffix in TABLE_SUFFIXES]

    def figure(self, suffix: str = ".png") -> str:
        """The distillation table at a glance (.png, .pdf or its .html page)."""
        return self.run.figure("distill", suffix)

    def outputs(self) -> list[str]:
        figures = [self.figure(suffix) for suffix in FIGURE_SUFFIXES]
        return [f"{self.run.results}/metrics/distill.tsv", *self.tables(), *figures]

    def evaluation_inputs(self, model: str) -> dict[str, Any]:
        """Inputs of evaluate_distilled; the multi-head student calibrates its head rule on the adapt split."""
        run = self.run
        files: dict[str, Any] = {
            "weights": run.model(model),
            "sidecar": run.model(model, ".json"),
            "test": run.data["test"],
            "corrupted_test": run.corrupted_dir("test"),
        }
        if model == MULTIHEAD:
            files |= {"adapt": run.data["adapt"], "corrupted_adapt": run.corrupted_dir("adapt")}
        return files


__all__ = ["DistillPaths", "RunPaths", "RwsPaths", "alternatives", "asked_targets"]


def asked_targets(settings: Any) -> list[str]:
    """What a Snakemake invocation asked for short of the whole run, from its ``workflow.dag_settings``:
    its targets other than ``all``, and its ``--until`` and ``--omit-from`` (empty for a whole run)."""
    if settings is None:
        return []
    asked = [t for t in sorted(getattr(settings, "targets", ())) if t != "all"]
    asked += sorted(getattr(job, "rule_name", str(job)) for job in getattr(settings, "target_jobs", ()))
    asked += [f"--until {t}" for t in sorted(getattr(settings, "until", ()))]
    asked += [f"--omit-from {t}" for t in sorted(getattr(settings, "omit_from", ()))]
    return asked
