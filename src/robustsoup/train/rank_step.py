"""One rank of a training launched as a SLURM step: ``python -m robustsoup.train.rank_step <call file>``.

:func:`robustsoup.train.distributed.run_as_ranks`, called in a SLURM job, pickles the call (the
function, its arguments, the job's RNG state, threads, log file and backend) to a file the nodes
share and starts this module as every task of ``srun --ntasks=N``
(:func:`~robustsoup.train.distributed.srun_command`). Each task takes its rank, the world size,
its local rank and the master from SLURM's variables
(:func:`~robustsoup.train.distributed.slurm_group`), joins the process group (gloo on the CPU,
nccl on the task's GPU) and runs the call; the training's rank 0 writes.
"""

from __future__ import annotations

import os
import pickle
import socket
import sys
from collections.abc import Mapping, Sequence

import torch.distributed as dist

from .distributed import init_group, slurm_group


def task_group(env: Mapping[str, str]) -> dict[str, str]:
    """torch.distributed's variables of this SLURM task: :func:`slurm_group`'s, or for a step of one task
    rank 0 of 1 with this host as the master."""
    if "SLURM_PROCID" not in env:
        raise RuntimeError(
            "robustsoup.train.rank_step runs as a task of a SLURM step (srun sets SLURM_PROCID); "
            "it is started by robustsoup.train.distributed.run_as_ranks, not by hand"
        )
    group = slurm_group(env)
    if group is not None:
        return group
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def main(argv: Sequence[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) != 1:
        raise SystemExit(f"usage: python -m robustsoup.train.rank_step <call file>; found arguments {argv}")
    with open(argv[0], "rb") as f:
        call = pickle.load(f)
    group = task_group(os.environ)
    os.environ.update(group)
    rank, world_size = int(group["RANK"]), int(group["WORLD_SIZE"])
    init_group(call.backend, rank, world_size, int(group["LOCAL_RANK"]), cuda=call.backend == "nccl")
    try:
        call()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
