"""Run every benchmark, one after the other, and write one table of their headline numbers.

Each benchmark runs in its own process (so none inherits another's threads or
caches) with ``--summary``; its full output goes to ``<out>/<name>.txt`` and
its headline rows into ``<out>/summary.{md,tsv}``: measure, value, unit, goal,
and whether the goal was met. Benchmarks run one at a time: the ratios they
print are measured within one run each, and two benchmarks sharing the cores
would only measure each other.

    .venv/bin/python bench/run_all.py [--out bench/results] [--only soups,data_loader] [--results results/digits]
                                      [--refs /tmp/refs] [--quick]

``soups`` needs the base models of a finished run (``make run``); without
them it is reported as skipped, with the reason. The four ``peer_*``
benchmarks compare robustsoup with the authors' code (``bench/peer_common.py``):
``--refs`` is the folder holding the parity kit's reference checkouts
(``tools/parity/README.md``); without them, training and corruptions fall back
to a mirrored loop and robustsoup's per-image path, and say so. ``--quick``
runs the peer benchmarks at smoke-test sizes (their numbers then mean little).
A peer benchmark writes its rows only after its equality check passed (a failed check fails it);
its machine line and the load it ran under go beside its status.

Without ``--quick`` the peers run at the issue's sizes: training one epoch of 2 batches of 128,
AutoAttack 16 points per norm (width 16), corruptions and soups 1,000 images. On the 2-core machine
that is about half an hour of ``make bench`` (an estimate from the parts measured under load: the
corruption peer's per-image side alone ~15 min, training ~8 min, AutoAttack a few minutes).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from measurements import Measurement, read_summary

HERE = Path(__file__).resolve().parent
BENCHMARKS = (
    "train_throughput",
    "soups",
    "corruptions",
    "data_loader",
    "filelist_corruptions",
    "peer_training",
    "peer_autoattack",
    "peer_corruptions",
    "peer_soups",
)
PEERS_WITH_CHECKOUTS = ("peer_training", "peer_corruptions")


def run_benchmark(name: str, out: Path, extra: list[str]) -> tuple[list[Measurement], str]:
    """Run ``bench/<name>.py``; return its rows and a status ("ok", or why it produced none)."""
    with tempfile.TemporaryDirectory() as tmp:
        summary = Path(tmp) / "summary.json"
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, str(HERE / f"{name}.py"), "--summary", str(summary), *extra],
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        (out / f"{name}.txt").write_text(result.stdout + result.stderr, encoding="utf-8")
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no output"])[-1]
            return [], f"failed after {seconds:.0f} s: {last}"
        notes = [line for line in result.stdout.splitlines() if line.startswith(("machine:", "measured under"))]
        return read_summary(summary), "; ".join([f"ok ({seconds:.0f} s)", *notes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument(
        "--results",
        type=Path,
        default=Path("results/digits"),
        help="a finished run's results folder (for the soups benchmark)",
    )
    parser.add_argument(
        "--refs",
        type=Path,
        default=None,
        help="folder of the parity kit's checkouts (default: $ROBUSTSOUP_REFS or /tmp/refs)",
    )
    parser.add_argument("--quick", action="store_true", help="the peer benchmarks at smoke-test sizes")
    args = parser.parse_args()
    chosen = [b for b in args.only.split(",") if b] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; expected some of {list(BENCHMARKS)}")
    args.out.mkdir(parents=True, exist_ok=True)

    rows: list[Measurement] = []
    status: dict[str, str] = {}
    for name in chosen:
        extra = ["--results", str(args.results)] if name == "soups" else []
        if name in PEERS_WITH_CHECKOUTS and args.refs is not None:
            extra += ["--refs", str(args.refs)]
        if name.startswith("peer_") and args.quick:
            extra.append("--quick")
        models = args.results / "seed-0" / "models"  # where bench/soups.py reads the base models
        if name == "soups" and not (models / "linf.safetensors").exists():
            status[name] = f"skipped: no finished run in {args.results} (run `make run` first)"
            continue
        print(f"running {name} …", file=sys.stderr, flush=True)
        found, status[name] = run_benchmark(name, args.out, extra)
        rows += found

    lines = ["| benchmark | measure | value | unit | goal | met |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.benchmark} | {r.measure} | {r.value:.3g} | {r.unit} | {r.goal} | {r.met} |" for r in rows]
    lines += ["", *(f"- {name}: {text}" for name, text in status.items())]
    table = "\n".join(lines) + "\n"
    (args.out / "summary.md").write_text(table, encoding="utf-8")
    tsv = ["benchmark\tmeasure\tvalue\tunit\tgoal\tmet"]
    tsv += [f"{r.benchmark}\t{r.measure}\t{r.value:.6g}\t{r.unit}\t{r.goal}\t{r.met}" for r in rows]
    (args.out / "summary.tsv").write_text("\n".join(tsv) + "\n", encoding="utf-8")
    print(table)
    if any(not text.startswith(("ok", "skipped")) for text in status.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
