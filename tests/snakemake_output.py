"""Running Snakemake and reading its console output in tests (imported by test modules; not a test itself)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from conftest import REPO


def snakemake_command(workdir: Path, configfile: Path, *args: str) -> list[str]:
    """``python -m snakemake`` on the project's Snakefile in ``workdir`` with ``configfile``, then ``args``."""
    return [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        *args,
    ]


def job_stats(output: str) -> dict[str, int]:
    """The 'Job stats' table Snakemake prints (of a run or a dry run), as {rule: count}."""
    counts, in_table = {}, False
    for line in output.splitlines():
        if line.startswith("job ") and "count" in line:
            in_table = True
            continue
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if in_table and match:
            if match.group(1) == "total":
                break
            counts[match.group(1)] = int(match.group(2))
    return counts
