"""What a run asks of the machines it runs on, and the parse-time checks that they can give it: each
training's ``gpu`` and ``nodes`` resources (:class:`TrainingResources`, the rules' getters), a GPU driver where
``device: cuda`` runs locally, ``nodes`` only under SLURM, and the files from outside the run.

Torch-free: every job, SLURM jobs included, parses the Snakefile.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import ConfigError, training_sections

if TYPE_CHECKING:
    from .paths import RunPaths

# Files that exist where an NVIDIA (or ROCm) GPU driver is loaded: checked without importing torch.
GPU_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/kfd")


class TrainingResources:
    """The ``gpu`` and ``nodes`` resources of the rules that train, from the resolved config's training
    sections (:func:`robustsoup.config.training_sections`)."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    def _section(self, section: tuple[str, ...]) -> Mapping[str, Any]:
        spec: Any = self.config
        for key in section:
            spec = spec[key]
        return spec

    def gpus(self, *section: str) -> int:
        """The ``gpus`` of the training section at key path ``section`` (``"finetune", "L2"``): the ``gpu``
        resource of the rule that trains it (the job's script then runs the training as that many ranks)."""
        return int(self._section(section)["gpus"])

    def nodes(self, *section: str) -> int:
        """The ``nodes`` of the training section at key path ``section``: the ``nodes`` resource of the rule
        that trains it (under SLURM, sbatch --nodes; its ``gpus`` ranks are a step over them)."""
        return int(self._section(section).get("nodes", 1))


def check_nodes(config: Mapping[str, Any], jobs_run_here: bool) -> None:
    """Every training section's ``nodes`` is at most its ``gpus``, and above 1 only where jobs run under
    SLURM (checked at parse time: a local run cannot spread a training over machines)."""
    for path, section in training_sections(config).items():
        nodes, gpus = section.get("nodes", 1), section["gpus"]
        if nodes > gpus:
            raise ConfigError(
                f"config key '{path}.nodes': {nodes} nodes for gpus: {gpus} processes; every node runs at "
                f"least one, so set nodes to at most {gpus} (gpus is the total over the nodes)"
            )
        if nodes > 1 and jobs_run_here and not os.environ.get("SLURM_JOB_ID"):
            raise ConfigError(
                f"config key '{path}.nodes': {nodes}, but the jobs run on this machine; a training spreads "
                "over several nodes only as a SLURM step: run with --profile profiles/slurm, or set "
                f"{path}.nodes: 1"
            )


def check_device(config: Mapping[str, Any], jobs_run_here: bool) -> None:
    """``device: cuda`` on a machine whose jobs run locally must see a GPU driver (torch-free: the driver's
    files). Skipped when jobs run elsewhere (a SLURM login node has no GPU; the compute nodes do)."""
    if not jobs_run_here or config["device"] != "cuda":
        return
    if not any(Path(p).exists() for p in GPU_DRIVER_FILES):
        raise ConfigError(
            "config key 'device': cuda, but this machine shows no GPU driver (none of "
            f"{', '.join(GPU_DRIVER_FILES)} exists) and the jobs run here; set device: auto (CUDA when "
            "present, else the CPU) or cpu, or run on a machine with a GPU (--profile profiles/slurm)."
        )


def check_external_files(paths: RunPaths) -> None:
    """Every file from outside the run that a rule reads (:meth:`RunPaths.external_weights`) exists (checked
    at parse time: a typo fails before any job is queued, not hours into a cluster run)."""
    sections = ["model"] + (["teacher", "student"] if paths.distill is not None else [])
    for section in sections:
        for key, path in paths.external_weights(section).items():
            if not Path(path).is_file():
                raise ConfigError(
                    f"config key '{key if section == 'model' else 'distill.' + key}': the weights file {path} "
                    "does not exist (relative paths are from the working directory). robustsoup never "
                    "downloads: copy the file there, or correct the key."
                )
