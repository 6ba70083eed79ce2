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
draws use a stream of their own per rank (rank 0's is the one-process stream).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.modules.batchnorm import _BatchNorm

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
        local_rank=int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        backend=str(dist.get_backend()),
        sync_batchnorm=sync_batchnorm,
    )


def from_environment(gpus: int, device: torch.device, sync_batchnorm: bool = False) -> Distributed | None:
    """The process group a training of ``gpus`` processes runs in (None for one), initialised from
    torchrun's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``) if need be.

    nccl on CUDA devices (each rank pinned to GPU ``LOCAL_RANK``), gloo otherwise. Raises when the number of
    processes launched is not ``gpus``.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != gpus:
        raise RuntimeError(
            f"the training asks for gpus: {gpus} but {launched} process(es) were launched; run it as "
            f"`{torchrun_command(gpus, ['<script>', '...'])}` (with gpus: 1, as one plain process)"
        )
    if gpus == 1:
        return None
    if not dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device.type == "cuda" else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend, init_method="env://")
    return current(sync_batchnorm)


def _worker(local_rank: int, world_size: int, port: int, backend: str, fn: Callable, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(local_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world_size),
    )
    dist.init_process_group(backend=backend, init_method="env://", rank=local_rank, world_size=world_size)
    try:
        fn(*args)
    finally:
        dist.destroy_process_group()


def spawn(fn: Callable, world_size: int, *args, backend: str = "gloo") -> None:
    """Run ``fn(*args)`` in ``world_size`` new processes on this machine, each a rank of one process group
    (what torchrun does, without a launcher; ``fn`` and ``args`` must be picklable)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torch.multiprocessing.spawn(_worker, args=(world_size, port, backend, fn, args), nprocs=world_size, join=True)


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
        from torch.distributed.nn.functional import all_reduce

        dims = [0, *range(2, x.dim())]
        xf = x.float()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float32, device=x.device)
        packed = torch.cat([xf.sum(dims), (xf * xf).sum(dims), count])
        if dist.get_backend() == "nccl" or x.device.type == "cpu":
            packed = all_reduce(packed)
        else:
            packed = all_reduce(packed.cpu()).to(x.device)
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


def has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, _BatchNorm) for m in module.modules())


class RankPolicy:
    """An input policy made rank-consistent (see the module docstring); state and name are the policy's."""

    def __init__(self, policy, distributed: Distributed) -> None:
        from .loop import AdversarialInputs, CorruptionInputs

        self.inner, self.distributed = policy, distributed
        self.name = policy.name
        self.adversarial = isinstance(policy, AdversarialInputs)
        self.shared_generator = self.adversarial and len(policy.norms) > 1
        own_stream = isinstance(policy, CorruptionInputs) or (self.adversarial and not self.shared_generator)
        if own_stream and distributed.rank > 0:
            offset = RANK_SEED_STRIDE * distributed.rank
            policy.seed += offset  # the corruption noise is seeded by it too
            policy.generator.manual_seed(policy.seed + (2 if isinstance(policy, CorruptionInputs) else 1))

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
    "has_batchnorm",
    "loss_weight",
    "spawn",
    "torchrun_command",
]
