"""What one job computed with, for its closing record (:func:`robustsoup.snakemake_job.job_record`).

The code that decides a fact hands it to the job's :class:`JobFacts`:
:func:`robustsoup.device.resolve_arithmetic` each arithmetic it resolved,
:func:`robustsoup.device.compile_model` whether each model it trained was compiled,
:class:`robustsoup.data.loading.BatchSource` how each split it read was batched. A job opens its
facts with :func:`job_facts` and passes them to the record; outside a job the facts go nowhere,
so no process keeps a list of them. Torch-free.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobFacts:
    """A job's facts in the order they were decided: ``arithmetic`` (each distinct
    :class:`~robustsoup.device.Arithmetic`), ``compiled`` (one bool per model trained) and
    ``batches`` (each distinct :meth:`~robustsoup.data.loading.BatchSource.record`)."""

    arithmetic: list[Any] = field(default_factory=list)
    compiled: list[bool] = field(default_factory=list)
    batches: list[dict] = field(default_factory=list)

    def resolved(self, arithmetic: Any) -> None:
        if arithmetic not in self.arithmetic:
            self.arithmetic.append(arithmetic)

    def compiled_model(self, enabled: bool) -> None:
        self.compiled.append(bool(enabled))

    def batched(self, record: dict) -> None:
        if record not in self.batches:
            self.batches.append(record)


_CURRENT: ContextVar[JobFacts | None] = ContextVar("robustsoup_job_facts", default=None)


@contextlib.contextmanager
def job_facts() -> Iterator[JobFacts]:
    """The facts of the job run inside the block (a fresh :class:`JobFacts`)."""
    facts = JobFacts()
    token = _CURRENT.set(facts)
    try:
        yield facts
    finally:
        _CURRENT.reset(token)


def current_facts() -> JobFacts:
    """The running job's facts; outside :func:`job_facts` a throwaway :class:`JobFacts`."""
    facts = _CURRENT.get()
    return facts if facts is not None else JobFacts()
