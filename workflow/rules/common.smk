# Configuration, names of models and soups, and the getters every rule uses.

import json
from pathlib import Path
import re
import sys

from snakemake.exceptions import WorkflowError

from robustsoup.config import (
    ConfigError,
    base_model_names,
    parent_name,
    resolve_config,
    write_resolved_config,
)
from robustsoup.lp.grid import grid_from_config

try:
    _resolved = resolve_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
config.clear()
config.update(_resolved)

DATASET = config["dataset"]
RESULTS = f"results/{DATASET}"
PARENT = parent_name(config)
TARGETS = list(config["finetune"])
BASE_MODELS = base_model_names(config)
SOUPS = {soup.id: soup for soup in grid_from_config(config)}
ALL_MODELS = BASE_MODELS + list(SOUPS)
ENV = "../envs/robustsoup.yaml"


def job_threads():
    """Threads of a job that trains or evaluates: the config's `threads`, auto = a quarter of --cores
    (1 without --cores: a cluster profile sets threads per rule)."""
    if config["threads"] != "auto":
        return config["threads"]
    try:
        return max(1, workflow.cores // 4)
    except WorkflowError:
        return 1


def _alternatives(names):
    return "|".join(re.escape(n) for n in names) if names else "(?!)"


wildcard_constraints:
    target=_alternatives(TARGETS),
    soup="soup-[A-Za-z0-9_.-]+",
    model=_alternatives(ALL_MODELS),
    split="train|adapt|test",


def model_checkpoint(name):
    return f"{RESULTS}/models/{name}.safetensors"


def soup_ingredients(wildcards):
    """Checkpoints of the base models a soup mixes (non-zero weights only)."""
    soup = SOUPS[wildcards.soup]
    return [model_checkpoint(m) for m, w in soup.weights if w != 0]


def soup_weights(wildcards):
    return settings({m: w for m, w in SOUPS[wildcards.soup].weights if w != 0})


def settings(value):
    """A config section as canonical JSON, for params: a change reruns the rule, a reordering of keys does not."""
    return json.dumps(value, sort_keys=True)


def finetune_settings(wildcards):
    return settings(config["finetune"][wildcards.target])


TRAINING_DATA_KEYS = ("root", "n_adapt", "n_test", "split_seed", "k_adapt_per_class", "cache_max_images")


def training_context():
    """Config that changes what any training produces (tracked as params so a change reruns).

    Only the keys that change the training split count: adding a shift must not retrain."""
    data = {k: config["data"][k] for k in TRAINING_DATA_KEYS}
    return settings({"data": data, **{k: config[k] for k in ("dataset", "seed", "model", "threats")}})


def evaluation_outputs(model):
    """Named outputs of evaluate_model: <threat>_rows and <threat>_points for clean and every norm."""
    folder = f"{RESULTS}/metrics/{model}/test"
    return {
        f"{t}_{kind}": f"{folder}/{t}{suffix}"
        for t in ["clean", *config["evaluate"]["threats"]]
        for kind, suffix in (("rows", ".tsv"), ("points", ".points.tsv"))
    }


def metric_files():
    return [path for m in ALL_MODELS for path in evaluation_outputs(m).values()]


def report_figures(suffixes=(".png",)):
    return [f"{RESULTS}/figures/soup_line_{a}_{b}{suffix}" for a, b in config["soups"]["lines"] for suffix in suffixes]


def report_tables():
    return [f"{RESULTS}/tables/accuracy.csv", f"{RESULTS}/tables/accuracy.md"]


def corrupted_dir_or_none(split):
    """The split's corrupted copies (data.smk's CORRUPTED_SPLITS) when generated, else nothing."""
    return [f"{RESULTS}/data/corrupted/{split}/labels.npy"] if split in CORRUPTED_SPLITS else []


def ternary_metrics():
    return [f"{RESULTS}/metrics/soups/ternary.tsv"] if config["soups"]["ternary"]["enabled"] else []


def soups_figures():
    names = ["soup_composition"] + (["soup_ternary"] if config["soups"]["ternary"]["enabled"] else [])
    return [f"{RESULTS}/figures/{n}{suffix}" for n in names for suffix in (".png", ".pdf")]


def gathered_studies(wildcards=None):
    """Study name → gathered metric file, merged into metrics/all.tsv.

    Called at DAG time (an input function): RWS_READY and DISTILL_READY come
    from rules included after this file.
    """
    studies = {"soups-shifts": f"{RESULTS}/metrics/soups/shifts.tsv"}
    if config["soups"]["ternary"]["enabled"]:
        studies["soups-ternary"] = f"{RESULTS}/metrics/soups/ternary.tsv"
    if RWS_READY:
        studies["rws"] = f"{RESULTS}/metrics/rws.tsv"
    if DISTILL_READY:
        studies["distill"] = f"{RESULTS}/metrics/distill.tsv"
    return studies


def final_outputs():
    return [
        f"{RESULTS}/metrics/all.tsv",
        *report_tables(),
        *report_figures(),
        f"{RESULTS}/tables/soups_shifts.md",
        *soups_figures(),
    ]


def print_report_locations():
    print("\nrobustsoup: the run is complete. Tables and figures:", file=sys.stderr)
    for path in report_tables() + report_figures() + [f"{RESULTS}/tables/soups_shifts.md"] + soups_figures():
        print(f"  {path}", file=sys.stderr)
    print(f"  metrics (tidy rows): {RESULTS}/metrics/all.tsv\n", file=sys.stderr)
