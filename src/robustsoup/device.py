"""Device choice for jobs (CUDA when present, else the CPU) and GPU leases for concurrent jobs."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch


def select_device(preference: str = "auto") -> torch.device:
    """``auto`` → CUDA if available else CPU; ``cuda`` fails clearly when there is none."""
    if preference == "cpu":
        return torch.device("cpu")
    if preference == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' was asked for but torch sees no CUDA device; set device: auto or cpu")
        return torch.device("cuda")
    if preference == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    raise ValueError(f"unknown device {preference!r}; expected auto, cpu or cuda")


def seed_everything(seed: int) -> None:
    """Seed torch's CPU and CUDA generators (Python's and NumPy's are not used for training)."""
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# --- distinct GPUs for concurrent jobs -------------------------------------------------------
#
# Snakemake's `--resources gpu=N` only caps how many GPU jobs run at once; it never tells a job
# which device to use (snakemake issue 281), so N jobs would all land on GPU 0. Each GPU job
# therefore takes a lease: an exclusive flock on `<lease_dir>/gpu<id>.lock`, held for the job's
# lifetime. The kernel drops a flock when its process dies, so a crashed or killed job frees its
# device without any cleanup. Under SLURM the job already sees only the GPUs it was given.

GPU_IDS_ENV = "ROBUSTSOUP_GPU_IDS"
LEASE_DIR_ENV = "ROBUSTSOUP_GPU_LEASE_DIR"
DEFAULT_LEASE_DIR = Path("/tmp/robustsoup-gpu-leases")


class NoFreeDeviceError(RuntimeError):
    """Every device stayed leased for longer than the timeout."""


def visible_gpu_ids() -> list[str]:
    """The GPUs this machine offers to leases, without initialising CUDA in this process.

    ``ROBUSTSOUP_GPU_IDS`` (comma-separated) wins; otherwise ``nvidia-smi``'s indices; none
    when neither is there (a CPU machine).
    """
    listed = os.environ.get(GPU_IDS_ENV)
    if listed is not None:
        return [i.strip() for i in listed.split(",") if i.strip()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def under_slurm() -> bool:
    """True inside a SLURM job step (devices are then SLURM's business)."""
    return "SLURM_JOB_ID" in os.environ


@contextlib.contextmanager
def gpu_lease(gpu_ids: Sequence[str] | None = None, lease_dir: str | Path | None = None,
              timeout: float = 3600.0, poll: float = 0.5) -> Iterator[str | None]:
    """Hold an exclusive lease on one free GPU and expose only it via ``CUDA_VISIBLE_DEVICES``.

    Yields the leased id, or None when there is nothing to lease (no GPUs, or under SLURM,
    where ``CUDA_VISIBLE_DEVICES`` is left as SLURM set it). Must run before CUDA is
    initialised in the process. Raises :class:`NoFreeDeviceError` after ``timeout`` seconds.
    """
    ids = list(gpu_ids) if gpu_ids is not None else ([] if under_slurm() else visible_gpu_ids())
    if not ids:
        yield None
        return
    folder = Path(lease_dir or os.environ.get(LEASE_DIR_ENV) or DEFAULT_LEASE_DIR)
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        for gpu in ids:
            handle = open(folder / f"gpu{gpu}.lock", "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            handle.seek(0)
            handle.truncate()
            handle.write(f"{os.getpid()}\n")
            handle.flush()
            previous = os.environ.get("CUDA_VISIBLE_DEVICES")
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            try:
                yield gpu
            finally:
                if previous is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = previous
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        if time.monotonic() > deadline:
            raise NoFreeDeviceError(
                f"all of GPUs {ids} stayed leased for {timeout:.0f} s (lease files in {folder}); "
                "run fewer GPU jobs at once (--resources gpu=N) or free a device"
            )
        time.sleep(poll)
