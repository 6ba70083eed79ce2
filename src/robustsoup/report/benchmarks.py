"""Snakemake benchmark files (one TSV per job) summarized per rule, with what each job computed in."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..io import write_text_atomic
from .captions import COST_REPORT
from .html import write_table_page

# The last line of every job's log (robustsoup.snakemake_job.job_record): what it computed with and
# how long its work took; read here (the benchmark table) and by bench/dag_walltime.py.
JOB_RECORD = "robustsoup-job:"


def read_job_record(log_path: str | Path) -> dict[str, str]:
    """The fields of the last ``robustsoup-job:`` line of a job's log (empty when there is none)."""
    try:
        lines = Path(log_path).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        if JOB_RECORD in line:
            record = line.split(JOB_RECORD, 1)[1].split()
            return dict(field.split("=", 1) for field in record if "=" in field)
    return {}


def job_table(benchmarks: str | Path, logs: str | Path = "logs") -> pd.DataFrame:
    """One row per job: rule, job, wall ``s``, ``max_rss_mb`` (the job's closing record's where it has one,
    else Snakemake's), and from the mirrored log
    (``logs/<rule>/….log`` beside ``benchmarks/<rule>/….tsv``) the time inside the job, its fixed
    cost (``s`` − inside), precision, memory format and the machine's CPU capability."""
    benchmarks, rows = Path(benchmarks), []
    for path in sorted(benchmarks.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        if frame.empty or "s" not in frame:
            continue
        relative = path.relative_to(benchmarks)
        record = read_job_record(Path(logs) / relative.with_suffix(".log"))
        seconds = float(frame["s"].iloc[-1])
        inside = float(record["inside_s"]) if "inside_s" in record else float("nan")
        max_rss = pd.to_numeric(frame.get("max_rss", pd.Series(dtype=float)), errors="coerce").max()
        if "max_rss_mb" in record:  # the job's own peak: a job forked by the job server is no child of Snakemake's
            max_rss = float(record["max_rss_mb"])
        rows.append(
            {
                "rule": relative.parts[0],
                "job": str(relative),
                "s": seconds,
                "max_rss_mb": max_rss,
                "inside_s": inside,
                "fixed_s": seconds - inside,
                "precision": record.get("precision", ""),
                "memory_format": record.get("memory_format", ""),
                "cpu_capability": record.get("cpu_capability", ""),
                "native_bf16": record.get("native_bf16", ""),
            }
        )
    return pd.DataFrame(
        rows,
        columns=[
            "rule",
            "job",
            "s",
            "max_rss_mb",
            "inside_s",
            "fixed_s",
            "precision",
            "memory_format",
            "cpu_capability",
            "native_bf16",
        ],
    )


def _distinct(values: pd.Series) -> str:
    return "+".join(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def summarize_benchmarks(
    folder: str | Path, out_path: str | Path, logs: str | Path = "logs", page_path: str | Path | None = None
) -> pd.DataFrame:
    """Per rule: jobs, total and longest wall time (s), mean fixed cost per job (s), peak max RSS
    (MB), and the precision / memory format / CPU the jobs ran with; written to ``out_path`` (CSV)
    and ``page_path`` (its HTML page; by default beside the CSV).

    Snakemake writes ``s`` (wall seconds) and ``max_rss`` (MB) per job; rules
    are the first folder level under ``folder``; the rest comes from each
    job's closing log record (:func:`read_job_record`).
    """
    jobs = job_table(folder, logs)
    table = jobs.groupby("rule").agg(
        jobs=("job", "count"),
        total_s=("s", "sum"),
        longest_s=("s", "max"),
        fixed_s_per_job=("fixed_s", "mean"),
        max_rss_mb=("max_rss_mb", "max"),
        precision=("precision", _distinct),
        memory_format=("memory_format", _distinct),
        cpu_capability=("cpu_capability", _distinct),
        native_bf16=("native_bf16", _distinct),
    )
    table = table.sort_values("total_s", ascending=False).round(2)
    write_text_atomic(out_path, table.to_csv())
    write_benchmarks_page(table, Path(out_path).with_suffix(".html") if page_path is None else page_path)
    return table


def write_benchmarks_page(table: pd.DataFrame, path: str | Path) -> Path:
    """The benchmark table as an HTML page for the report: the rules by total wall time, with the sum."""
    total = float(table["total_s"].sum()) if len(table) else 0.0
    note = (
        f"{int(table['jobs'].sum()) if len(table) else 0} jobs, {total:.1f} s of wall time in all (summed over "
        "jobs, so parallel jobs count fully). total s / longest s: wall seconds of the rule's jobs (Snakemake's "
        "benchmark files); fixed s per job: the mean time a job spends outside its own work (start-up, imports, "
        "reading inputs); max rss mb: peak resident memory of one job in MB; precision, memory format and CPU "
        "capability: what the jobs computed with, from each job's closing log record."
    )
    shown = table.rename(columns=lambda c: c.replace("_", " "))  # headers that wrap, so the page fits
    return write_table_page(
        shown,
        path,
        "Run cost: wall time, memory and arithmetic per rule",
        note,
        COST_REPORT.caption("benchmarks"),
        index_name="rule",
        cell=_cell,
    )


def _cell(column: str, value) -> str:
    if isinstance(value, float) and value != value:
        return ""
    if column in ("total s", "longest s", "fixed s per job", "max rss mb") and isinstance(value, int | float):
        return f"{value:,.1f}"
    return str(value)
