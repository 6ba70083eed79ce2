"""What every workflow script shares: logging to the rule's log, threads, device, config."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from . import job_server
from .data import options
from .device import (
    Arithmetic,
    configure_cuda,
    cpu_native_bf16,
    gpu_lease,
    keep_freed_memory,
    machine_summary,
    select_device,
)
from .facts import JobFacts, job_facts
from .report.benchmarks import JOB_RECORD
from .run_config import resolve_config
from .seeds import fill_seed, job_seed


def job_record(rule: str, inside_s: float, facts: JobFacts) -> str:
    """``robustsoup-job: rule=… inside_s=… precision=… memory_format=… compile=… batches=… cpu_capability=… max_rss_mb=… job_server=…``.

    ``inside_s`` is the time from the job's set-up to its end: Snakemake's
    benchmark time minus it is the job's fixed cost (interpreter, imports,
    unpickling the job). ``facts`` are what the job's code decided (:mod:`robustsoup.facts`):
    a job that resolved no arithmetic computed in float32, ``compile`` says whether the models it
    trained were compiled, ``batches`` how its splits were batched (``device``, ``memory``, or ``files`` with the
    loader's workers and decoder, e.g. ``files/7w/torchvision``; ``none`` when it batched none).
    """
    used = facts.arithmetic or [Arithmetic()]
    fields = {
        "rule": rule,
        "inside_s": f"{inside_s:.2f}",
        "precision": "+".join(dict.fromkeys(a.precision for a in used)),
        "memory_format": "+".join(dict.fromkeys(a.memory_format for a in used)),
        "compile": "+".join(dict.fromkeys(str(c).lower() for c in facts.compiled or [False])),
        "batches": "+".join(dict.fromkeys(_batches(r) for r in facts.batches)) or "none",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_native_bf16(),
        "threads": torch.get_num_threads(),
        # Snakemake's benchmark cannot see the memory of a job that robustsoup.job_server forked.
        "max_rss_mb": f"{_peak_rss_mb():.2f}",
        "job_server": str(bool(os.environ.get(job_server.CHILD))).lower(),
    }
    return JOB_RECORD + " " + " ".join(f"{k}={v}" for k, v in fields.items())


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (``ru_maxrss``: kB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)


def _batches(record: dict) -> str:
    """``device``, ``memory`` or ``files/<workers>w/<decoder>`` from a :meth:`BatchSource.record`."""
    if record["batches"] != "files":
        return record["batches"]
    return f"files/{record['loader_workers']}w/{record['decoder']}"


# The rules that train (cudnn.benchmark on); every other rule computes with deterministic cuDNN kernels.
TRAINING_RULES = frozenset(
    {
        "pretrain",
        "pretrain_reference",
        "finetune",
        "train_rws_init",
        "train_rws_model",
        "train_expert",
        "train_teacher",
        "train_student",
        "distill_student",
        "finetune_student",
    }
)


def job_device(config: dict, gpus: int) -> torch.device:
    """The device of a rule asking for ``gpus`` GPUs: ``config["device"]`` (:func:`select_device`) for a
    GPU rule, the CPU for a rule with no ``gpu`` resource (it holds no lease and is not counted by
    ``--resources gpu``, and under SLURM its job has no GPU)."""
    return select_device(config["device"]) if gpus > 0 else torch.device("cpu")


@dataclass
class Job:
    """A running rule: its resolved config and the device it computes on."""

    config: dict
    device: torch.device


def _slurm_context(gpus: int) -> str:
    """Under SLURM, the job id, the GPUs the rule asked for and the devices SLURM gave it."""
    if "SLURM_JOB_ID" not in os.environ:
        return ""
    return (
        f" in SLURM job {os.environ['SLURM_JOB_ID']} (gpu={gpus},"
        f" CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')})"
    )


def _wildcards(snakemake: Any) -> dict:
    wildcards = getattr(snakemake, "wildcards", None)
    return dict(wildcards.items()) if hasattr(wildcards, "items") else {}


def _fill_params(snakemake: Any) -> None:
    """A seed's job: the ``{seed}`` of its params' ``{name: path}`` maps filled in (Snakemake fills it only
    into string and list params; robustsoup.seeds)."""
    seed = _wildcards(snakemake).get("seed")
    if seed is None:
        return
    # A script's Snakemake object (snakemake 9.27) rebuilds `params` from `_params_store` on every access.
    store = getattr(snakemake, "_params_store", None)
    if store is not None:
        for i, value in enumerate(store):
            store[i] = fill_seed(value, str(seed))
        return
    params = getattr(snakemake, "params", None)
    for name in list(params.keys()) if hasattr(params, "keys") else []:
        setattr(params, name, fill_seed(getattr(params, name), str(seed)))


@contextlib.contextmanager
def snakemake_job(snakemake: Any) -> Iterator[Job]:
    """Set up a rule's script from the ``snakemake`` object.

    Logging and stderr (tqdm progress, warnings, tracebacks) go to
    ``snakemake.log[0]``; torch uses ``snakemake.threads`` threads; the config
    is resolved against the schema again, so a script never sees a partial
    config. A rule with ``resources: gpu=N`` leases N free GPUs for its
    lifetime (:func:`robustsoup.device.gpu_lease`), so concurrent jobs land
    on distinct devices (a training of ``gpus: N`` runs a rank on each); a
    rule without it computes on the CPU (:func:`job_device`). Rules that
    train nothing run cuDNN deterministically (:func:`robustsoup.device.configure_cuda`).
    """
    log_path = snakemake.log[0]
    started = time.perf_counter()
    with open(log_path, "a", encoding="utf-8", buffering=1) as log_file:
        handler = logging.StreamHandler(log_file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        root.setLevel(logging.INFO)
        saved_stderr = sys.stderr
        sys.stderr = log_file
        try:
            torch.set_num_threads(max(1, int(snakemake.threads)))
            keep_freed_memory()  # glibc keeps freed activations in the heap (device.keep_freed_memory)
            config = resolve_config(snakemake.config)  # registers an ImageFolder's spec too
            config = job_seed(config, _wildcards(snakemake))  # a seed's job runs its seed
            _fill_params(snakemake)
            options.configure(config["data"])
            gpus = int(getattr(snakemake, "resources", {}).get("gpu", 0) or 0)
            wants_gpu = gpus > 0
            lease = gpu_lease(count=gpus) if wants_gpu and config["device"] != "cpu" else contextlib.nullcontext()
            with lease as leased, job_facts() as facts:
                job = Job(config=config, device=job_device(config, gpus))
                deterministic = snakemake.rule not in TRAINING_RULES
                cuda = job.device.type == "cuda"
                cuda_settings = configure_cuda(config["cuda_tf32"], deterministic) if cuda else {}
                logging.getLogger("robustsoup").info(
                    "rule %s on %s%s with %d threads%s; machine: %s; data: %s%s",
                    snakemake.rule,
                    job.device,
                    f" (leased GPU {leased})" if leased is not None else "",
                    torch.get_num_threads(),
                    _slurm_context(gpus),
                    machine_summary(),
                    options.current(),
                    f"; cuda: {cuda_settings}" if cuda_settings else "",
                )
                yield job
            logging.getLogger("robustsoup").info(job_record(snakemake.rule, time.perf_counter() - started, facts))
        except BaseException:
            logging.getLogger("robustsoup").exception("rule %s failed", snakemake.rule)
            raise
        finally:
            sys.stderr = saved_stderr
            root.removeHandler(handler)
