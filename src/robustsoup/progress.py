"""The one progress mechanism of every long loop: ``i/N`` and an ETA.

On a terminal (stderr is a TTY) it is a tqdm bar. Anywhere else — a rule's log, which
:func:`robustsoup.snakemake_job.snakemake_job` points stderr and logging at, or a pipe — it is
plain lines through logging (``robustsoup.progress``), never a carriage return, at most one
every :data:`INTERVAL_S` seconds and always one when the loop ends::

    select_soups: 6/30 steps (20%), 12s elapsed, ETA 48s

Only the outermost open loop speaks: a loop counted inside another (the clean evaluation of each
point of the ternary grid) is quiet, so a log shows one counter at a time.

Torch-free, so any layer can use it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

log = logging.getLogger(__name__)

INTERVAL_S = 5.0
"""The least time between two log lines of one loop (a terminal's bar redraws on its own clock)."""

T = TypeVar("T")

_OPEN: list[Progress] = []  # the loops counting now, outermost first


def duration(seconds: float) -> str:
    """``7s``, ``4m05s``, ``2h03m``: a duration a person reads at a glance."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """``total`` steps of a loop named ``desc``, counted with :meth:`advance`; a context manager.

    ``enabled=False`` (a non-main rank of a distributed training) says nothing, nor does a loop opened
    while another is open. ``interval`` overrides :data:`INTERVAL_S` for this loop. The bar or the lines
    are chosen once, from ``sys.stderr`` at construction.
    """

    def __init__(
        self, total: int, desc: str, unit: str = "steps", enabled: bool = True, interval: float | None = None
    ) -> None:
        self.total, self.desc, self.unit = int(total), desc, unit
        self.enabled = enabled and not _OPEN
        _OPEN.append(self)
        self.interval = INTERVAL_S if interval is None else interval
        self.done = 0
        self.started = self.last = time.monotonic()
        self.closed = False
        self._bar = None
        if self.enabled and _is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, desc=desc, unit=unit.rstrip("s") or "it", file=sys.stderr)

    def line(self) -> str:
        """The current state as one plain line: ``desc: i/N unit (p%), elapsed, ETA``."""
        elapsed = time.monotonic() - self.started
        share = self.done / self.total if self.total else 1.0
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        eta_text = duration(eta) if eta == eta else "unknown"
        return (
            f"{self.desc}: {self.done}/{self.total} {self.unit} ({share:.0%}), "
            f"{duration(elapsed)} elapsed, ETA {eta_text}"
        )

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more steps done; log a line when :attr:`interval` has passed or the loop is complete."""
        self.done += n
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if self.done >= self.total or now - self.last >= self.interval:
            self.last = now
            _say(self.line())

    def close(self) -> None:
        """End the loop: the bar closes; a log that ended short of ``total`` (an exception) says where."""
        if self.closed:
            return
        self.closed = True
        if self in _OPEN:
            _OPEN.remove(self)
        if self._bar is not None:
            self._bar.close()
        elif self.enabled and self.done < self.total:
            _say(self.line() + " (stopped)")

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress(iterable: Iterable[T], desc: str, total: int | None = None, **options) -> Iterator[T]:
    """Each item of ``iterable``, counted by a :class:`Progress` of ``total`` (default ``len(iterable)``)
    steps; ``options`` are :class:`Progress`'s."""
    items = iterable if total is not None or hasattr(iterable, "__len__") else list(iterable)
    with Progress(len(items) if total is None else total, desc, **options) as counter:  # type: ignore[arg-type]
        for item in items:
            yield item
            counter.advance()


def _is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    return bool(isatty and isatty())


def _say(text: str) -> None:
    """Through logging when a handler will write it (a rule's log); else straight to stderr."""
    if logging.getLogger().handlers or log.handlers:
        log.info(text)
    else:
        print(text, file=sys.stderr, flush=True)
