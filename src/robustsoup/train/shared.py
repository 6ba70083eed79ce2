"""A table of per-image rows computed once by the ranks of a data-parallel run, and shared between them.

Every rank of a training needs some per-image table whole (the distillation's clean-head targets: the
original student's logits on every training image, 5 GB of float32 on ImageNet's 1.28 M images), because
its shards of the global batches reach every image. Computing it in every rank costs N times the work
and N times the memory. :func:`shared_rows` has each rank compute its contiguous share of the rows
(:meth:`~robustsoup.train.distributed.Distributed.shard`), write it to a ``.npy`` file of its own, and
then map every rank's file copy-on-write (:class:`SharedRows`): the rows are computed once, and the
ranks of a node read them from one copy in the page cache. Each file is written by one rank only, so
the files may be on a file system that several nodes share; rank 0 removes them once every rank has
mapped them (a mapping outlives its file).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .distributed import Distributed


class SharedRows:
    """Rows ``0 … n − 1`` held in consecutive memory-mapped parts; indexing by an index tensor gathers them."""

    def __init__(self, parts: list[torch.Tensor]) -> None:
        self.parts = parts
        sizes = torch.tensor([len(p) for p in parts], dtype=torch.int64)
        self.starts = torch.cumsum(sizes, 0) - sizes
        self.n = int(sizes.sum())

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx) -> torch.Tensor:
        idx = torch.as_tensor(idx, dtype=torch.int64).reshape(-1)
        part = torch.bucketize(idx, self.starts, right=True) - 1
        out = torch.empty((len(idx), *self.parts[0].shape[1:]), dtype=self.parts[0].dtype)
        for p in part.unique().tolist():
            mine = part == p
            out[mine] = self.parts[p][idx[mine] - self.starts[p]]
        return out


def shared_rows(
    compute: Callable[[torch.Tensor], torch.Tensor], n: int, path: str | Path, distributed: Distributed | None
) -> torch.Tensor | SharedRows:
    """The table ``compute(torch.arange(n))`` (rows on the CPU), each row computed once over the ranks.

    One process: ``compute`` of every index, in memory. A rank of ``distributed``: ``compute`` of its
    share, written to ``<path>.rank<r>.npy``; returns a :class:`SharedRows` over every rank's file once
    all are written (see the module docstring). Every rank must call it.
    """
    if distributed is None:
        return compute(torch.arange(n))
    path = Path(path)
    files = [path.with_name(f"{path.name}.rank{r}.npy") for r in range(distributed.world_size)]
    mine = distributed.shard(n)
    rows = compute(torch.arange(mine.start, mine.stop)).contiguous()
    np.save(files[distributed.rank], rows.numpy())
    del rows
    distributed.barrier()  # every share written
    parts = [torch.from_numpy(np.load(f, mmap_mode="c")) for f in files]
    distributed.barrier()  # every share mapped
    if distributed.is_main:
        for f in files:
            f.unlink(missing_ok=True)
    return SharedRows(parts)
