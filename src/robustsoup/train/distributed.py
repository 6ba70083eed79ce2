"""Data-parallel training over several processes (one per GPU) with torch.distributed.

A run with ``gpus: N`` in its training section is launched as N processes
(``torchrun --standalone --nproc_per_node=N``, or :func:`spawn`), each a
*rank*. :func:`run_epochs <robustsoup.train.loop.run_epochs>` then works on
the same global batch of ``batch_size`` images in every rank: the epoch order
is drawn from the training seed identically everywhere, the global batch is
loaded and augmented identically everywhere, and each rank keeps its
contiguous shard (:meth:`Distributed.shard`; sizes differ by at most one),
runs the input policy (the attack) on it and back-propagates its loss scaled
by its share of the batch. The gradients are then averaged across ranks
(:meth:`Distributed.average_gradients`, an all-reduce of the flattened
gradients, the arithmetic of DDP), so every rank takes the step one process
would have taken on the whole batch, up to the order of float summation.

BatchNorm layers see their rank's shard only, unless ``sync_batchnorm``
replaces them by :class:`SyncedBatchNorm` (batch statistics all-reduced over
ranks, the global batch's statistics; it runs on CPU (gloo) and GPU (nccl),
which ``torch.nn.SyncBatchNorm`` does not). Running statistics are
broadcast from rank 0 after every step otherwise, as DDP's
``broadcast_buffers`` does, so every rank attacks the same model.

Only rank 0 writes (the resume state, the checkpoint, the epoch log lines);
every rank reads the resume state, which holds each rank's own global RNG
and input-policy state. :class:`RankPolicy` makes the input policies
rank-consistent: the adversarial policy's running robust accuracy is summed
over ranks every batch (so the multi-norm draw uses global statistics), a
multi-norm policy keeps one norm per global batch by sharing rank 0's
generator, and single-norm PGD's random starts and the corruption policy's
draws use a stream of their own per rank (rank 0's is the one-process stream),
as do the draws of any policy with an ``offset_seed(offset)`` method (the
distillation's augmentation).

How the ranks come to be (:func:`launch_needed`, :func:`from_environment`):
a training of ``gpus: N`` started as one plain process (a Snakemake job that
asked for ``gpu=N``) re-launches itself as N local processes
(:func:`run_as_ranks`, ``torch.multiprocessing`` spawn of the same function
with the same arguments: no second command line to rebuild from Snakemake's
job object, no launcher on PATH, a rank's exception re-raised in the job);
inside a SLURM job it launches them as a SLURM step of N tasks over the
section's ``nodes`` instead (:func:`srun_command`: ``srun --ntasks=N --nodes=M``
of :mod:`robustsoup.train.rank_step` on the call pickled next to the output),
so that they may span machines and SLURM accounts for and kills them.
Under torchrun the group comes from ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
in a SLURM step of N tasks from ``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID``
with rank 0's node of the step's node list as the master (:func:`slurm_group`).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.distributed.nn.functional import all_reduce as differentiable_all_reduce
from torch.nn.modules.batchnorm import _BatchNorm

from ..data.loading import RANK_CPUS_ENV, job_cpus
from .policies import AdversarialInputs, CorruptionInputs

log = logging.getLogger(__name__)

RANK_SEED_STRIDE = 1_000_003  # rank r > 0 of a per-rank random stream is seeded seed + r × this
BUCKET_ELEMENTS = 1 << 23  # gradients all-reduced in flat buckets of about this many elements


def torchrun_command(gpus: int, program: Sequence[str]) -> str:
    """The command line that runs ``program`` (e.g. ``["script.py", "args"]``) as ``gpus`` ranks on this node."""
    return " ".join(["torchrun", "--standalone", f"--nproc_per_node={gpus}", *program])


@dataclass(frozen=True)
class Distributed:
    """This process's place in an initialised process group of ``world_size`` > 1 ranks."""

    rank: int
    world_size: int
    local_rank: int
    backend: str
    sync_batchnorm: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this rank writes (rank 0)."""
        return self.rank == 0

    @property
    def comm_device(self) -> torch.device:
        """Where tensors must be for a collective: this rank's GPU for nccl, the CPU for gloo."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def device(self, device: torch.device) -> torch.device:
        """``device`` with a CUDA device pinned to this rank's GPU (``LOCAL_RANK``)."""
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device

    def shard(self, n: int) -> slice:
        """This rank's rows of a global batch of ``n``: contiguous, sizes differing by at most one (as
        ``torch.tensor_split``)."""
        base, extra = divmod(n, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def check_batches(self, n: int, batch_size: int) -> None:
        """Raise unless every global batch of an epoch of ``n`` images gives every rank an image."""
        smallest = min(n, batch_size) if n % batch_size == 0 else n % batch_size
        if smallest < self.world_size:
            raise ValueError(
                f"a batch of {smallest} images cannot be split over {self.world_size} processes (training split of "
                f"{n} images, batch_size {batch_size}); choose a batch_size whose last batch has at least "
                f"{self.world_size} images, or fewer gpus"
            )

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """``values`` summed over ranks (float64)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(tensor)
        return tensor.tolist()

    def broadcast_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Overwrite ``tensor`` in place with rank 0's; return it."""
        moved = tensor.to(self.comm_device)
        dist.broadcast(moved, src=0)
        if moved is not tensor:
            tensor.copy_(moved)
        return tensor

    def gather_objects(self, obj: object) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    def average_gradients(self, model: nn.Module) -> None:
        """Replace every gradient by its mean over ranks (flat buckets, one all-reduce each)."""
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        for bucket in _buckets(grads):
            flat = _flatten_dense_tensors(bucket).to(self.comm_device)
            dist.all_reduce(flat)
            flat.div_(self.world_size)
            for grad, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                grad.copy_(synced)

    def broadcast_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers (BatchNorm running statistics) everywhere, as DDP's ``broadcast_buffers``."""
        buffers = [b for b in model.buffers() if b.is_floating_point() or b.dtype == torch.long]
        for bucket in _buckets(buffers):
            flat = _flatten_dense_tensors(bucket).to(self.comm_device)
            dist.broadcast(flat, src=0)
            for buffer, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                buffer.copy_(synced)

    def broadcast_model(self, model: nn.Module) -> None:
        """Rank 0's parameters and buffers everywhere (every rank starts from the same weights)."""
        with torch.no_grad():
            for bucket in _buckets([p.data for p in model.parameters()]):
                flat = _flatten_dense_tensors(bucket).to(self.comm_device)
                dist.broadcast(flat, src=0)
                for tensor, synced in zip(bucket, _unflatten_dense_tensors(flat, bucket), strict=True):
                    tensor.copy_(synced)
        self.broadcast_buffers(model)

    def record(self) -> dict:
        """What a sidecar records of the distribution."""
        return {"world_size": self.world_size, "backend": self.backend, "sync_batchnorm": self.sync_batchnorm}


def _buckets(tensors: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """``tensors`` grouped by dtype and device into buckets of about :data:`BUCKET_ELEMENTS` elements."""
    groups: dict[tuple, list[list[torch.Tensor]]] = {}
    for tensor in tensors:
        buckets = groups.setdefault((tensor.dtype, tensor.device), [[]])
        if buckets[-1] and sum(t.numel() for t in buckets[-1]) + tensor.numel() > BUCKET_ELEMENTS:
            buckets.append([])
        buckets[-1].append(tensor)
    return [bucket for buckets in groups.values() for bucket in buckets if bucket]


def current(sync_batchnorm: bool = False) -> Distributed | None:
    """The initialised process group as a :class:`Distributed`, or None (one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return None
    return Distributed(
        rank=dist.get_rank(),
        world_size=dist.get_world_size(),
        local_rank=_local_gpu(int(os.environ.get("LOCAL_RANK", dist.get_rank()))),
        backend=str(dist.get_backend()),
        sync_batchnorm=sync_batchnorm,
    )


def _first_host(nodelist: str) -> str:
    """The first node of a SLURM host list (``gpu[03-05,9],cpu1`` → ``gpu03``)."""
    match = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?([^,]*)", nodelist.strip())
    if match is None:
        raise ValueError(f"cannot read a host from SLURM_NODELIST={nodelist!r}; expected e.g. node1 or node[01-04]")
    prefix, ranges, suffix = match.groups()
    if ranges is None:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0] + suffix


def slurm_group(env: Mapping[str, str] | None = None) -> dict[str, str] | None:
    """torch.distributed's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``) of a SLURM step of more than one task, or None (no SLURM, or one task).

    Rank, world size and local rank are ``SLURM_PROCID``, ``SLURM_NTASKS`` and ``SLURM_LOCALID``; the
    master is the first node of ``SLURM_NODELIST`` (rank 0's: SLURM numbers tasks node by node) and the
    port ``MASTER_PORT`` when set, else one derived from ``SLURM_JOB_ID`` and ``SLURM_STEP_ID`` (:func:`step_port`:
    concurrent jobs differ, and so do the concurrent steps of one allocation, e.g. the trainings of a
    Snakemake run inside ``sbatch``).
    """
    env = os.environ if env is None else env
    if int(env.get("SLURM_NTASKS", "1")) < 2 or "SLURM_PROCID" not in env:
        return None
    missing = [k for k in ("SLURM_LOCALID", "SLURM_NODELIST", "SLURM_JOB_ID") if k not in env]
    if missing:
        raise RuntimeError(f"a SLURM step of {env['SLURM_NTASKS']} tasks without {missing}; run the job through srun")
    return {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env["SLURM_LOCALID"],
        "MASTER_ADDR": _first_host(env.get("SLURM_STEP_NODELIST", env["SLURM_NODELIST"])),
        "MASTER_PORT": env.get("MASTER_PORT", str(step_port(env["SLURM_JOB_ID"], env.get("SLURM_STEP_ID", "0")))),
    }


def step_port(job_id: str, step_id: str) -> int:
    """The master port of SLURM step ``step_id`` of job ``job_id``: 20000 + (job + 7919 × step) mod 20000, so
    the steps of one job (numbered 0, 1, 2, … by SLURM) get distinct ports (7919 is prime to 20000)."""
    step = int(step_id) if str(step_id).isdigit() else 0  # the batch step ("batch") and others: 0
    return 20000 + (int(job_id) + 7919 * step) % 20000


def launched_processes(env: Mapping[str, str] | None = None) -> int:
    """How many processes the launcher started (torchrun's ``WORLD_SIZE``, a SLURM step's tasks; else 1)."""
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env:
        return int(env["WORLD_SIZE"])
    group = slurm_group(env)
    return int(group["WORLD_SIZE"]) if group is not None else 1


def launch_needed(gpus: int) -> bool:
    """Whether a training of ``gpus`` processes, called in this one, must launch its ranks itself
    (:func:`run_as_ranks`): more than one asked for, and no launcher (or running group) made this a rank."""
    initialised = dist.is_available() and dist.is_initialized()
    return gpus > 1 and not initialised and launched_processes() == 1


def _local_gpu(local_rank: int) -> int:
    """The CUDA device of a local rank: its index, or modulo the visible devices where SLURM binds each task
    to its own GPUs (every task then sees device 0 only)."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    return local_rank % count if count else local_rank


def from_environment(gpus: int, device: torch.device, sync_batchnorm: bool = False) -> Distributed | None:
    """The process group a training of ``gpus`` processes runs in (None for one), initialised if need be
    from torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) or
    a SLURM step's (:func:`slurm_group`).

    nccl on CUDA devices (each rank pinned to GPU ``LOCAL_RANK``), gloo otherwise. Raises when the number of
    processes launched is not ``gpus`` (SLURM's tasks are not counted for ``gpus: 1``).
    """
    if dist.is_initialized():
        launched = dist.get_world_size()
    elif gpus == 1:  # one process, even inside a SLURM allocation of several tasks (e.g. snakemake in `sbatch -n 4`)
        launched = int(os.environ.get("WORLD_SIZE", "1"))
    else:
        launched = launched_processes()
    if launched != gpus:
        raise RuntimeError(
            f"the training asks for gpus: {gpus} but {launched} process(es) were launched; start it as one "
            f"plain process (it launches its {gpus} ranks itself), as `{torchrun_command(gpus, ['<script>', '...'])}`"
            f" or as a SLURM step of {gpus} tasks (tasks: {gpus}), or set gpus: {launched}"
        )
    if gpus == 1:
        return None
    if not dist.is_initialized():
        if "WORLD_SIZE" not in os.environ:
            os.environ.update(slurm_group() or {})
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device.type == "cuda" else "gloo"
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        init_group(backend, rank, world, local_rank, cuda=device.type == "cuda")
    return current(sync_batchnorm)


def init_group(backend: str, rank: int, world_size: int, local_rank: int, cuda: bool) -> None:
    """Join the process group from ``env://`` as ``rank`` of ``world_size``; with ``cuda`` pinned first to the
    local rank's GPU (:func:`_local_gpu`), which nccl is also told (``device_id``).

    The pinning must come first: collectives that build their own tensors (``all_gather_object``, the
    barrier) put them on the *current* CUDA device, and without it every rank's is GPU 0 (NCCL then
    refuses duplicate GPUs or hangs, and every rank opens a context on GPU 0)."""
    device_id = None
    if cuda:
        gpu = _local_gpu(local_rank)
        torch.cuda.set_device(gpu)
        device_id = torch.device("cuda", gpu) if backend == "nccl" else None
    dist.init_process_group(
        backend=backend, init_method="env://", rank=rank, world_size=world_size, device_id=device_id
    )


def _worker(
    local_rank: int, world_size: int, port: int, backend: str, fn: Callable, args: tuple, cuda: bool = False
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
    )
    init_group(backend, local_rank, world_size, local_rank, cuda)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world_size: int, *args, backend: str = "gloo", cuda: bool | None = None) -> None:
    """Run ``fn(*args)`` in ``world_size`` new processes on this machine, each a rank of one process group
    (what torchrun does, without a launcher; ``fn`` and ``args`` must be picklable). ``cuda`` (default:
    nccl's) pins every rank to its GPU before the group forms (:func:`init_group`)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cuda = backend == "nccl" if cuda is None else cuda
    torch.multiprocessing.spawn(_worker, args=(world_size, port, backend, fn, args, cuda), nprocs=world_size, join=True)


@dataclass(frozen=True)
class _RankCall:
    """``fn`` as one spawned rank runs it: on its own copy of the arguments (``payload``, pickled: torch's
    spawn would share CPU tensors' memory between the ranks, and every rank would then update the same
    weights), from the launching process's global RNG state (as if every rank had run the job's seeding),
    with its share of the threads, and logging to the job's log."""

    fn: Callable
    payload: bytes
    rng_state: torch.Tensor
    threads: int
    log_path: str | None
    log_level: int
    backend: str = "gloo"
    cpus: int | None = None  # the rank's share of the job's CPUs (its loader workers), :func:`rank_cpus`

    def __call__(self) -> None:
        rank = int(os.environ["RANK"])
        args = pickle.loads(self.payload)
        torch.set_rng_state(self.rng_state)
        torch.set_num_threads(self.threads)
        if self.cpus is not None:
            os.environ[RANK_CPUS_ENV] = str(self.cpus)
        root = logging.getLogger()
        root.setLevel(self.log_level)
        if self.log_path is not None:  # the job's log: every rank's lines, tagged; tqdm and tracebacks too
            stream = open(self.log_path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (the rank's lifetime)
            sys.stderr = stream
        else:
            stream = sys.stderr
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter(f"%(asctime)s %(levelname)s rank {rank} %(name)s: %(message)s"))
        root.addHandler(handler)
        try:
            self.fn(*args)
        except BaseException:
            log.exception("rank %d failed", rank)
            raise


def _job_log() -> str | None:
    """The file this process's stderr is written to (a Snakemake job's log, see ``snakemake_job``), if any."""
    name = getattr(sys.stderr, "name", None)
    return name if isinstance(name, str) and os.path.isfile(name) else None


def in_slurm_job(env: Mapping[str, str] | None = None) -> bool:
    """Whether this process runs inside a SLURM job (``SLURM_JOB_ID``): its ranks are then SLURM tasks."""
    env = os.environ if env is None else env
    return bool(env.get("SLURM_JOB_ID"))


# What a nested srun keeps of its caller's SLURM variables: the job's identity and the cluster's
# configuration. The rest describe the caller's own step (SLURM_NTASKS=1 of the executor's `srun -n1`,
# its CPUs and nodes) and srun would take them as its options.
SLURM_KEPT = (
    "SLURM_JOB_ID",
    "SLURM_JOBID",
    "SLURM_CONF",
    "SLURM_CLUSTER_NAME",
    "SLURM_SUBMIT_DIR",
    "SLURM_SUBMIT_HOST",
)


def rank_cpus(per_node: int, env: Mapping[str, str] | None = None) -> int:
    """CPUs each of ``per_node`` ranks on a node gets of this job's: SLURM's ``SLURM_CPUS_PER_GPU`` (one rank
    a GPU), else the job's CPUs (:func:`robustsoup.data.loading.job_cpus`) split evenly, at least one.

    The ranks read it back from :data:`RANK_CPUS_ENV` (:func:`~robustsoup.data.loading.job_cpus`): a SLURM
    step's tasks lose the caller's ``SLURM_CPUS_*`` (:func:`srun_environment`) and spawned ones never had
    a share of their own, so without it a rank's loader would count only its torch threads."""
    env = os.environ if env is None else env
    per_gpu = env.get("SLURM_CPUS_PER_GPU", "").strip()
    if per_gpu.isdigit() and int(per_gpu) > 0:
        return int(per_gpu)
    return max(1, job_cpus() // max(1, per_node))


def srun_command(gpus: int, nodes: int, call_path: str) -> list[str]:
    """The command line that runs the pickled call at ``call_path`` as a SLURM step of ``gpus`` tasks on
    ``nodes`` nodes of the current job (one :mod:`robustsoup.train.rank_step` per task).

    ``--overlap``: the caller is itself a step (the SLURM executor's ``srun -n1``) that holds the job's CPUs
    and GPUs on its node; without it the new step would wait for them forever. ``--kill-on-bad-exit=1``: a
    rank that fails ends the others (which would wait in a collective). ``--export=ALL``: the ranks get
    this process's environment (the job's threads and paths)."""
    return [
        "srun",
        f"--ntasks={gpus}",
        f"--nodes={nodes}",
        "--overlap",
        "--kill-on-bad-exit=1",
        "--export=ALL",
        sys.executable,
        "-m",
        "robustsoup.train.rank_step",
        call_path,
    ]


def srun_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` without the SLURM variables of the calling step (:data:`SLURM_KEPT` stay)."""
    return {k: v for k, v in env.items() if not k.startswith(("SLURM_", "SRUN_", "SBATCH_")) or k in SLURM_KEPT}


def run_as_ranks(
    fn: Callable, gpus: int, *args, device: torch.device, nodes: int = 1, call_path: str | None = None
) -> None:
    """Run ``fn(*args)`` as ``gpus`` ranks (nccl on CUDA, one GPU each, gloo on the CPU) and wait.

    Inside a SLURM job (:func:`in_slurm_job`) the ranks are the tasks of a SLURM step over ``nodes``
    nodes (:func:`srun_command`): the call is pickled to ``call_path`` (on the file system the nodes
    share, next to the output; deleted afterwards) and every task runs it (:mod:`robustsoup.train.rank_step`).
    Elsewhere they are local processes (:func:`spawn`), and ``nodes`` must be 1.

    Every rank starts from this process's global RNG state with its share of this process's threads
    (of its node's share, under SLURM), and logs to this process's log file (stderr redirected to a file)
    with its rank in every line. A rank's exception stops the others and is raised here (locally), or
    fails the step (SLURM; the traceback is in the log). Every rank gets its own copy of ``args``
    (pickled, so a model on a GPU is best moved to the CPU first).
    """
    slurm = in_slurm_job()
    if nodes > 1 and not slurm:
        raise RuntimeError(
            f"the training asks for nodes: {nodes}, but this process runs outside a SLURM job "
            "(no SLURM_JOB_ID); run the workflow with --profile profiles/slurm, or set nodes: 1"
        )
    per_node = -(-gpus // nodes)
    if device.type == "cuda" and not slurm and torch.cuda.device_count() < gpus:
        raise RuntimeError(
            f"the training asks for gpus: {gpus} but {torch.cuda.device_count()} CUDA device(s) are visible "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); run the job with "
            f"resources gpu={gpus} on a machine with {gpus} GPUs, or lower gpus"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    call = _RankCall(
        fn,
        pickle.dumps(args),
        torch.get_rng_state(),
        max(1, torch.get_num_threads() // per_node),
        _job_log(),
        logging.getLogger().getEffectiveLevel(),
        backend,
        rank_cpus(per_node),
    )
    if not slurm:
        log.info("launching %d ranks (%s, %d CPUs each) of %s", gpus, backend, call.cpus, fn.__name__)
        spawn(call, gpus, backend=backend, cuda=device.type == "cuda")
        return
    if call_path is None:
        raise ValueError("run_as_ranks in a SLURM job needs call_path, a file on the file system the nodes share")
    if shutil.which("srun") is None:
        raise RuntimeError(
            f"this SLURM job (SLURM_JOB_ID={os.environ['SLURM_JOB_ID']}) has no srun on PATH to start the "
            f"training's {gpus} ranks as a step; put SLURM's client programs on PATH in the job's environment"
        )
    with open(call_path, "wb") as f:
        pickle.dump(call, f)
    command = srun_command(gpus, nodes, call_path)
    log.info("launching %d ranks (%s) of %s as a SLURM step: %s", gpus, backend, fn.__name__, " ".join(command))
    try:
        sys.stderr.flush()
        result = subprocess.run(command, env=srun_environment(os.environ), check=False)
    finally:
        os.remove(call_path)
    if result.returncode != 0:
        raise RuntimeError(
            f"the SLURM step of {gpus} ranks on {nodes} node(s) failed (srun exited with {result.returncode}); "
            f"the ranks' errors are in {call.log_path or 'the job’s stderr'}"
        )


class SyncedBatchNorm(_BatchNorm):
    """BatchNorm whose training statistics are those of the global batch: per-channel sums, sums of squares
    and counts all-reduced over ranks (differentiably), in float32. Eval mode is plain BatchNorm."""

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected an input of at least 2 dimensions (N, C, ...), found {x.dim()}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        packed = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        if dist.get_backend() == "nccl" or x.device.type == "cpu":
            packed = differentiable_all_reduce(packed)
        else:
            packed = differentiable_all_reduce(packed.cpu()).to(x.device)
        c = x.shape[1]
        n = packed[-1]
        mean = packed[:c] / n
        var = (packed[c : 2 * c] / n - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                unbiased = var.detach() * (n / (n - 1)) if float(n) > 1 else var.detach()
                self.running_var.mul_(1 - factor).add_(unbiased, alpha=factor)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def convert_batchnorm(module: nn.Module) -> nn.Module:
    """``module`` with every BatchNorm replaced by a :class:`SyncedBatchNorm` sharing its parameters and
    buffers (the state dict keeps its keys); in place for children, so the parameters stay the optimizer's."""
    if isinstance(module, _BatchNorm) and not isinstance(module, SyncedBatchNorm):
        synced = SyncedBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats
        )
        if module.affine:
            synced.weight, synced.bias = module.weight, module.bias
        if module.track_running_stats:
            synced.running_mean, synced.running_var = module.running_mean, module.running_var
            synced.num_batches_tracked = module.num_batches_tracked
        synced.train(module.training)
        return synced
    for name, child in module.named_children():
        converted = convert_batchnorm(child)
        if converted is not child:
            setattr(module, name, converted)
    return module


class RankPolicy:
    """An input policy made rank-consistent (see the module docstring); state and name are the policy's."""

    def __init__(self, policy, distributed: Distributed) -> None:
        self.inner, self.distributed = policy, distributed
        self.name = policy.name
        self.adversarial = isinstance(policy, AdversarialInputs)
        self.shared_generator = self.adversarial and len(policy.norms) > 1
        own_stream = isinstance(policy, CorruptionInputs) or (self.adversarial and not self.shared_generator)
        offset = RANK_SEED_STRIDE * distributed.rank
        if own_stream and distributed.rank > 0:
            policy.seed += offset  # the corruption noise is seeded by it too
            policy.generator.manual_seed(policy.seed + (2 if isinstance(policy, CorruptionInputs) else 1))
        elif distributed.rank > 0 and hasattr(policy, "offset_seed"):  # a study's policy with streams of its own
            policy.offset_seed(offset)

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if not self.adversarial:
            return self.inner(model, x, y)
        robust, seen = self.inner.robust.clone(), self.inner.seen.clone()
        out = self.inner(model, x, y)
        delta = self.distributed.all_sum(torch.cat([self.inner.robust - robust, self.inner.seen - seen]).tolist())
        k = len(robust)
        self.inner.robust = robust + torch.tensor(delta[:k], dtype=torch.float64)
        self.inner.seen = seen + torch.tensor(delta[k:], dtype=torch.float64)
        if self.shared_generator:  # shards of unequal size advance it unequally; rank 0's draws the next norm
            state = self.distributed.broadcast_(self.inner.generator.get_state())
            self.inner.generator.set_state(state.cpu())
        return out

    def __getattr__(self, name: str):
        """Any other attribute is the policy's (e.g. the distillation policy's ``last_shifted``)."""
        if name == "inner":  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


def loss_weight(distributed: Distributed, shard: int, batch: int) -> float:
    """Factor of a rank's mean loss over ``shard`` of ``batch`` images so that the mean over ranks of the
    scaled gradients is the gradient of the global batch's mean loss."""
    return shard * distributed.world_size / batch


__all__ = [
    "Distributed",
    "RankPolicy",
    "SyncedBatchNorm",
    "convert_batchnorm",
    "current",
    "from_environment",
    "in_slurm_job",
    "init_group",
    "launch_needed",
    "launched_processes",
    "loss_weight",
    "rank_cpus",
    "run_as_ranks",
    "slurm_group",
    "spawn",
    "srun_command",
    "srun_environment",
    "step_port",
    "torchrun_command",
]
