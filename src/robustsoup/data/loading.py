"""Batches of a split on the device that computes them: the one mechanism training and evaluation read through.

:class:`BatchSource` hands out ``(indices, uint8 images, labels)`` on the
device for any order of a split's indices, in batches:

* a decoded split (:class:`~robustsoup.data.splits.ImageSplit`: CIFAR, the
  digits, a decoded ImageNet subset) is moved to a CUDA device once, as
  uint8 (1 byte a pixel), when it fits in :data:`~robustsoup.data.options.DEVICE_BUDGET_FRACTION`
  of the free GPU memory, and every batch is gathered there; on the CPU (or
  when it does not fit) batches are gathered from memory, as before;
* a file-list split (:class:`~robustsoup.data.splits.FileSplit`: the
  ImageNet family) is decoded by a torch ``DataLoader`` whose batch sampler
  walks the given order, so batches come in exactly the order (and with
  exactly the images) of the plain path; with ``loader_workers`` > 0 the
  decoding runs in that many persistent worker processes, on CUDA into
  pinned memory copied without blocking, so the GPU computes while the next
  batches decode. 0 workers decode in the job's process (with its decoding
  threads), which is what ``auto`` picks without CUDA: the cores that would
  decode ahead are the ones computing (``bench/data_loader.py``).

Images stay uint8 until the caller scales them, so a batch crosses to the
device at a quarter of float32's bytes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import lazy_loader

from ..facts import current_facts
from . import options as options_
from .sources import FileSource
from .splits import FileSplit, ImageSplit

torch = lazy_loader.load("torch")  # not at import: parsing the workflow must not load torch

log = logging.getLogger(__name__)

PREFETCH_BATCHES = 4  # batches each worker decodes ahead


RANK_CPUS_ENV = "ROBUSTSOUP_RANK_CPUS"  # a data-parallel rank's share of the job's CPUs, set by its launcher


def job_cpus() -> int:
    """CPUs one process of this job may use: a launched rank's share (:data:`RANK_CPUS_ENV`, see
    :func:`robustsoup.train.distributed.rank_cpus`); else SLURM's ``SLURM_CPUS_PER_GPU`` where set; else
    ``SLURM_CPUS_PER_TASK`` shared among the task's ``LOCAL_WORLD_SIZE`` processes (torchrun's ranks on
    this node, 1 without torchrun); else the process's torch threads (a workflow job sets them from the
    rule's ``threads``)."""
    share = os.environ.get(RANK_CPUS_ENV, "").strip()
    if share.isdigit() and int(share) > 0:
        return int(share)
    per_gpu = os.environ.get("SLURM_CPUS_PER_GPU", "").strip()
    if per_gpu.isdigit() and int(per_gpu) > 0:
        return int(per_gpu)
    per_task = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if per_task.isdigit() and int(per_task) > 0:
        ranks = os.environ.get("LOCAL_WORLD_SIZE", "1").strip()
        return max(1, int(per_task) // max(1, int(ranks) if ranks.isdigit() else 1))
    return max(1, torch.get_num_threads())


def loader_workers(requested: int | str, device) -> int:
    """DataLoader worker processes for a file-list split: ``requested`` when it is a number; ``auto`` is 0
    off CUDA (decoding in the job's process, with its decoding threads: a worker would only take cores
    from the computation) and, on CUDA, the job's CPUs (:func:`job_cpus`) less one for the process that
    drives the GPU, at least one."""
    if requested != "auto":
        return int(requested)
    if torch.device(device).type != "cuda":
        return 0
    return max(1, job_cpus() - 1)


class _OrderedBatches:
    """The batch sampler of a file-list loader: consecutive ``batch_size`` slices of ``order``, which the
    :class:`BatchSource` sets before each pass (persistent workers re-read it every pass)."""

    def __init__(self) -> None:
        self.order = torch.empty(0, dtype=torch.int64)
        self.batch_size = 1
        self.shard = None

    def __len__(self) -> int:
        return -(-len(self.order) // self.batch_size)

    def __iter__(self) -> Iterator:
        yield from _slices(self.order, self.batch_size, self.shard)


def _slices(order, batch_size: int, shard=None) -> Iterator:
    """Consecutive ``batch_size`` slices of ``order``, each cut to its rows ``shard(len(slice))`` when given."""
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        yield idx if shard is None else idx[shard(len(idx))]


class _DecodedBatches:
    """What a loader worker holds: the split's files and how to decode them; item ``idx`` (a tensor of
    indices) is the uint8 batch of those images."""

    def __init__(self, split: FileSplit, decoder: str) -> None:
        self.source = FileSource(split.paths, split.labels, split.resolution, split.resize, decoder=decoder)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, idx) -> torch.Tensor:
        return self.source.load(idx)


class BatchSource:
    """Batches of ``split`` on ``device`` (see the module docstring for how each kind of split is read).

    ``workers`` and ``decoder`` default to the job's ``data.loader_workers`` and ``data.decoder``
    (:data:`robustsoup.data.options.OPTIONS`). :attr:`kind` says which path it took: ``device``
    (decoded split held on the GPU), ``memory`` (decoded split gathered from host memory) or ``files``
    (decoded by the loader); :meth:`record` describes it for the job's log and closing record. One pass
    (:meth:`batches`) at a time: a new pass restarts the loader's workers on the new order.
    """

    def __init__(
        self,
        split: ImageSplit | FileSplit,
        device,
        *,
        workers: int | str | None = None,
        decoder: str | None = None,
    ) -> None:
        opts = options_.current()
        self.split = split
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self.labels = split.labels
        self.workers = 0
        self.decoder = decoder or opts.decoder
        self._loader = None
        if isinstance(split, FileSplit):
            self.kind = "files"
            self.workers = loader_workers(opts.loader_workers if workers is None else workers, self.device)
            self._sampler = _OrderedBatches()
            self._loader = torch.utils.data.DataLoader(
                _DecodedBatches(split, self.decoder),
                batch_size=None,
                sampler=self._sampler,
                num_workers=self.workers,
                pin_memory=self.cuda,
                persistent_workers=self.workers > 0,
                prefetch_factor=PREFETCH_BATCHES if self.workers > 0 else None,
                # Its own generator: a loader draws a seed for its workers on every pass, which must not
                # advance the global RNG that training and its resume state rely on.
                generator=torch.Generator().manual_seed(0),
            )
        elif self.cuda and self._fits(split.images, opts.device_budget):
            self.kind = "device"
            self.images = split.images.to(self.device)
            self.labels = split.labels.to(self.device)
        else:
            self.kind = "memory"
            self.images = split.images
        current_facts().batched(self.record())  # for the job's closing record

    def _fits(self, images: torch.Tensor, budget: float) -> bool:
        free, _total = torch.cuda.mem_get_info(self.device)
        needed = images.numel() * images.element_size()
        if needed <= budget * free:
            return True
        log.info(
            "%s %s: %.1f GB of images exceed %.0f %% of the GPU's %.1f GB free; batches are copied from host memory",
            self.split.dataset,
            self.split.split,
            needed / 1e9,
            100 * budget,
            free / 1e9,
        )
        return False

    def __len__(self) -> int:
        return len(self.split)

    def record(self) -> dict:
        """``{"batches": kind, "loader_workers": n, "decoder": name}`` (the decoder of a file-list split)."""
        record = {"batches": self.kind, "loader_workers": self.workers}
        if self.kind == "files":
            record["decoder"] = self.decoder
        return record

    def batches(
        self, order: torch.Tensor, batch_size: int, shard=None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(indices, images, labels)`` for consecutive ``batch_size`` slices of ``order`` (CPU int64):
        indices on the CPU, uint8 ``(B, 3, R, R)`` images and int64 labels on the device.

        ``shard`` (a data-parallel rank's :meth:`~robustsoup.train.distributed.Distributed.shard`: a batch
        size to the rank's slice of it) keeps only those rows of every slice, and only they are decoded
        or gathered: the ranks of a training read each image of an epoch once between them."""
        order = torch.as_tensor(order, dtype=torch.int64)
        if self.kind == "files":
            self._sampler.order, self._sampler.batch_size, self._sampler.shard = order, batch_size, shard
            for idx, images in zip(_slices(order, batch_size, shard), self._loader, strict=True):
                labels = self.labels[idx]
                yield idx, images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            return
        for idx in _slices(order, batch_size, shard):
            if self.kind == "device":
                at = idx.to(self.device, non_blocking=True)
                yield idx, self.images[at], self.labels[at]
            else:
                yield idx, self.images[idx].to(self.device), self.labels[idx].to(self.device)

    def floats(
        self, start: int = 0, stop: int | None = None, batch_size: int = 500
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``start`` … ``stop`` − 1 (to the end if None) in [0, 1] float32 and their labels, on the device."""
        stop = len(self) if stop is None else min(stop, len(self))
        parts = list(self.batches(torch.arange(start, max(start, stop)), batch_size))
        if not parts:
            shape = tuple(self.split.images.shape[1:])
            return torch.empty((0, *shape), device=self.device), self.labels[:0].to(self.device)
        images = torch.cat([x for _, x, _ in parts]).float().div_(255.0)
        return images, torch.cat([y for _, _, y in parts])


def batch_source(data: ImageSplit | FileSplit | BatchSource, device) -> BatchSource:
    """``data`` itself when it is a :class:`BatchSource` on ``device`` (one source serves several
    evaluations without moving or re-opening the split), else a new one over the split ``data``."""
    if isinstance(data, BatchSource) and data.device == torch.device(device):
        return data
    return BatchSource(data.split if isinstance(data, BatchSource) else data, device)
