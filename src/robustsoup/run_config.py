"""The one config reader: :func:`resolve_config` (and :func:`load_config_file`, a YAML file through it).

Jobs (:mod:`robustsoup.snakemake_job`), the CLI, the findings, the workflow (``workflow/rules/common.smk``)
and the tests all resolve a config here: the schema's defaults and validation with the foundations' cross-key
checks (:mod:`robustsoup.config`, whose schema step is private to this module), the seeds, an ImageFolder's
registration, and every study's checks (:data:`STUDY_CHECKS`, each declared in the study's config module).

Torch-free: every job, SLURM jobs included, parses the Snakefile.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config import ConfigError, _apply_schema, read_config_file
from .data import DataLayoutError
from .data.imagefolder import register_imagefolder
from .distill.config import DISTILL_CHECKS
from .paths import RunPaths
from .rws.config import RWS_CHECKS
from .seeds import resolve_seeds
from .soups.config import SOUPS_CHECKS

# Each study's cross-key checks, declared beside it (in its config module) and run on the resolved config; a
# study whose section has ``enabled: false`` is skipped (the soups have no switch: theirs always run).
STUDY_CHECKS: dict[str, tuple[Callable[[Mapping[str, Any]], None], ...]] = {
    "soups": SOUPS_CHECKS,
    "rws": RWS_CHECKS,
    "distill": DISTILL_CHECKS,
}


def resolve_config(config: Mapping[str, Any] | None) -> dict:
    """The schema's defaults, validation and every cross-key check (the foundations' and each enabled
    study's), the seeds filled in (``seeds: [seed]`` unless given) and an ImageFolder registered: what the
    workflow and every job run on and what ``robustsoup config`` prints. Raises ConfigError."""
    resolved = resolve_seeds(config, _apply_schema(config))
    for study, checks in STUDY_CHECKS.items():
        if resolved[study].get("enabled", True):
            for check in checks:
                check(resolved)
    try:
        if register_imagefolder(resolved) is not None:  # dataset: imagefolder → its spec, under data.name
            RunPaths(resolved)  # reads the training images' statistics once prepare_data has written them
    except DataLayoutError as error:
        raise ConfigError(str(error)) from None
    return resolved


def load_config_file(path: str | Path) -> dict:
    """Read a YAML config file (:func:`robustsoup.config.read_config_file`, which names a missing, empty or
    malformed file) and :func:`resolve_config` it."""
    return resolve_config(read_config_file(path))
