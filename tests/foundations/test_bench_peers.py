"""bench/peer_common.py and bench/peer_autoattack.py: the work count, the per-pair ratios, the equality check."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def test_counting_model_counts_passes_and_images_and_changes_nothing(bench_path) -> None:
    from peer_common import CountingModel

    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    counted = CountingModel(net)
    x = torch.randn(5, 4)
    assert torch.equal(counted(x), net(x))
    counted(x[:2])
    assert counted.reset() == (2, 7)
    assert counted.reset() == (0, 0)


def test_pair_ratios_and_median(bench_path) -> None:
    from peer_common import Side, median, pair_ratios

    a, b = Side("a", lambda: None, [1.0, 2.0, 3.0]), Side("b", lambda: None, [2.0, 2.0, 2.0])
    assert pair_ratios(a, b) == [0.5, 1.0, 1.5]
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    with pytest.raises(ValueError):  # a side that ran fewer rounds is a bug, not a shorter list
        pair_ratios(Side("a", lambda: None, [1.0]), b)


@pytest.mark.ci  # 2,000 small APGD passes: ~25 s on a loaded 2-core machine
def test_autoattack_peer_counts_the_same_work_on_both_sides(bench_path) -> None:
    """A tiny standard L∞ evaluation: per-point results equal, and robustsoup runs no more forward
    passes than AutoAttack (the same APGD code; AutoAttack adds its checks)."""
    pytest.importorskip("pyautoattack")
    import peer_autoattack

    lines: list[str] = []
    (row,) = peer_autoattack.measure(2, 1, 2, "cpu", lines.append, norms=("Linf",))
    assert row.unit == "×" and row.value > 0 and row.goal == "<= 1.0"
    (count,) = [
        re.search(r"robustsoup (\d+) \(\d+ images\), AutoAttack (\d+)", line) for line in lines if "passes" in line
    ]
    ours, theirs = int(count.group(1)), int(count.group(2))
    assert 0 < ours <= theirs


def test_a_summary_is_written_where_no_folder_is_yet(bench_path, tmp_path) -> None:
    """A fresh clone has no bench/results: `make bench-dag` wrote its table, then died writing the summary there."""
    import json

    from measurements import Measurement, write_summary

    path = tmp_path / "bench" / "results" / "summary.json"
    write_summary(path, [Measurement("dag_walltime", "wall", 354.0, "s", "<= 360")])
    assert json.loads(path.read_text())[0]["value"] == 354.0
