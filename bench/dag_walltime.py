"""Wall time of the whole default DAG from an empty folder: precision forced to float32, then auto.

``make bench-dag`` runs auto, then float32 with the CPU limited to AVX2 (``--avx2-float32``: no AVX-512,
no native bf16, as an AVX2-only CPU), the two budgets of issue 28 (auto ≤ 360 s on a 2-core AVX-512
machine, float32 there ≤ 600 s).

For each precision the config (default ``config/config.yaml``, resolved, with
every ``precision`` key set to that value) runs through Snakemake in a fresh
temporary folder, exactly as ``make run`` would; prints wall time, job count,
summed job time and the fixed cost per job (Snakemake's benchmark time minus
the time inside the job, from each job's closing log record), with the
machine: CPU capability, native bf16 or not, cores. Both runs happen in one
invocation, so their ratio is measured on the same (shared, noisy) machine.

    .venv/bin/python bench/dag_walltime.py [--config config/config.yaml] [--cores 2]
        [--precisions float32,auto] [--avx2-float32] [--keep DIR] [--summary out.json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from robustsoup.device import cpu_native_bf16, machine_summary, resolve_precision
from robustsoup.report.benchmarks import job_table
from robustsoup.run_config import load_config_file

from measurements import Measurement, write_summary

REPO = Path(__file__).resolve().parents[1]
BUDGET_S = 600  # issue 12: the default DAG in ≤ 10 minutes on a 2-core CPU with float32
AUTO_BUDGET_S = 360  # issue 28: with auto, ≤ 6 minutes on the 2-core AVX-512 machine class
# The float32 budget is for an AVX2-only CPU: these limit this one (no AVX-512, no native bf16).
AVX2_LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "DNNL_MAX_CPU_ISA": "AVX2", "ROBUSTSOUP_NATIVE_BF16": "0"}


def force_precision(value, precision: str):
    """A copy of a resolved config with every ``precision`` key set to ``precision``."""
    if isinstance(value, dict):
        return {k: (precision if k == "precision" else force_precision(v, precision)) for k, v in value.items()}
    if isinstance(value, list):
        return [force_precision(v, precision) for v in value]
    return value


def run_dag(config: dict, folder: Path, cores: int, env: dict | None = None) -> float:
    """Run the whole DAG of ``config`` in ``folder`` (with ``env`` added to the environment); return its wall
    seconds."""
    (folder / "config").mkdir(parents=True)
    config_path = folder / "config" / "config.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    snakemake = Path(sys.executable).with_name("snakemake")
    command = [
        str(snakemake),
        "--snakefile",
        str(REPO / "workflow" / "Snakefile"),
        "--directory",
        str(folder),
        "--cores",
        str(cores),
        "--configfile",
        str(config_path),
        "--quiet",
        "progress",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    (folder / "snakemake.log").write_text(result.stdout + result.stderr, encoding="utf-8")
    if result.returncode != 0:
        raise SystemExit(
            f"the DAG failed in {folder} after {seconds:.0f} s (see {folder / 'snakemake.log'}):\n"
            + "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        )
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "config.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--precisions", default="float32,auto")
    parser.add_argument(
        "--avx2-float32",
        action="store_true",
        help="run the float32 DAG with the CPU limited to AVX2 ("
        + " ".join(f"{k}={v}" for k, v in AVX2_LIMITS.items())
        + ")",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep each run's folder under this folder")
    parser.add_argument("--summary", type=Path, default=None, help="also write the headline numbers here (JSON)")
    args = parser.parse_args()
    base = load_config_file(args.config)
    print(
        f"{args.config}, {args.cores} cores; {machine_summary()}; precision auto → {resolve_precision('auto', 'cpu')}",
        flush=True,
    )
    print(f"{'precision':<10}{'wall s':>8}{'jobs':>6}{'job s':>8}{'fixed s/job':>13}{'fixed share':>13}  used")
    rows, walls = [], {}
    for precision in [p for p in args.precisions.split(",") if p]:
        parent = Path(tempfile.mkdtemp(prefix=f"robustsoup-dag-{precision}-"))
        folder = parent / "run"
        limited = args.avx2_float32 and precision == "float32"
        env = AVX2_LIMITS if limited else None
        wall = run_dag(force_precision(base, precision), folder, args.cores, env)  # a failed run's folder stays
        jobs = job_table(folder / "benchmarks", folder / "logs")
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            shutil.copytree(folder, args.keep / precision, dirs_exist_ok=True)
        shutil.rmtree(parent, ignore_errors=True)
        used = "+".join(sorted({p for value in jobs["precision"] for p in str(value).split("+") if p}))
        used += (
            ", CPU " + "+".join(sorted({str(c) for c in jobs["cpu_capability"] if c}))
            if "cpu_capability" in jobs
            else ""
        )
        fixed = jobs["fixed_s"].mean()
        print(
            f"{precision:<10}{wall:>8.0f}{len(jobs):>6}{jobs['s'].sum():>8.0f}{fixed:>13.2f}"
            f"{jobs['fixed_s'].sum() / jobs['s'].sum():>12.0%}  {used}",
            flush=True,
        )
        walls[precision] = wall
        rows.append(
            Measurement(
                "dag_walltime",
                f"default DAG wall time, precision {precision}{' (CPU limited to AVX2)' if limited else ''} "
                f"({len(jobs)} jobs, {args.cores} cores)",
                wall,
                "s",
                f"<= {BUDGET_S}" if precision == "float32" else f"<= {AUTO_BUDGET_S}" if precision == "auto" else "",
            )
        )
        rows.append(Measurement("dag_walltime", f"fixed cost per job, precision {precision}", fixed, "s"))
    if {"float32", "auto"} <= set(walls) and not args.avx2_float32:  # on one CPU only
        ratio = walls["auto"] / walls["float32"]
        print(f"auto / float32 wall time: {ratio:.2f}×")
        # With native bf16, auto must be at least as fast; elsewhere auto is float32 and the ratio is noise.
        rows.append(
            Measurement("dag_walltime", "auto / float32 wall time", ratio, "×", "<= 1.05" if cpu_native_bf16() else "")
        )
    write_summary(args.summary, rows)


if __name__ == "__main__":
    main()
