"""The one result format of the benchmarks, so that ``bench/run_all.py`` can put them in one table.

Each benchmark prints its own detailed table and, given ``--summary PATH``,
also writes its headline measurements there as JSON rows: what was measured,
the value, its unit, and the goal it is held to (if any).
"""

from __future__ import annotations

import json
import operator
from dataclasses import asdict, dataclass
from pathlib import Path

_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass
class Measurement:
    benchmark: str
    measure: str
    value: float
    unit: str
    goal: str = ""  # e.g. ">= 3" or "<= 60"; empty when the number has no target

    @property
    def met(self) -> str:
        if not self.goal:
            return ""
        sign, target = self.goal.split()
        return "yes" if _COMPARE[sign](self.value, float(target)) else "no"


def write_summary(path: str | Path | None, rows: list[Measurement]) -> None:
    """Write ``rows`` to ``path`` as JSON (nothing when ``path`` is None), its folder made if missing (a fresh
    clone has no ``bench/results``)."""
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps([asdict(r) for r in rows], indent=1) + "\n", encoding="utf-8")


def read_summary(path: str | Path) -> list[Measurement]:
    return [Measurement(**row) for row in json.loads(Path(path).read_text(encoding="utf-8"))]
