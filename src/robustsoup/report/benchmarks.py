"""Snakemake benchmark files (one TSV per job) summarized per rule."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import write_text_atomic


def summarize_benchmarks(folder: str | Path, out_path: str | Path) -> pd.DataFrame:
    """Per rule: jobs, total and longest wall time (s), peak max RSS (MB), from ``folder/<rule>/**.tsv``.

    Snakemake writes ``s`` (wall seconds) and ``max_rss`` (MB) per job; rules
    are the first folder level under ``folder``.
    """
    rows = []
    for path in sorted(Path(folder).rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        if frame.empty or "s" not in frame:
            continue
        rule = path.relative_to(folder).parts[0]
        max_rss = pd.to_numeric(frame.get("max_rss", pd.Series(dtype=float)), errors="coerce").max()
        rows.append({"rule": rule, "job": str(path.relative_to(folder)), "s": float(frame["s"].iloc[-1]),
                     "max_rss_mb": max_rss})
    jobs = pd.DataFrame(rows, columns=["rule", "job", "s", "max_rss_mb"])
    table = jobs.groupby("rule").agg(jobs=("job", "count"), total_s=("s", "sum"), longest_s=("s", "max"),
                                     max_rss_mb=("max_rss_mb", "max"))
    table = table.sort_values("total_s", ascending=False).round(1)
    write_text_atomic(out_path, table.to_csv())
    return table
