"""bench/gpu.py: its CPU smoke mode runs every loop and reports rows with counted FLOPs."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_peak_table_knows_h200_and_says_nothing_for_unknown_devices(monkeypatch) -> None:
    gpu = _module()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert gpu.bf16_peak(torch.device("cuda")) == 989.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert gpu.bf16_peak(torch.device("cuda")) == 312.0
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some Future GPU")
    assert gpu.bf16_peak(torch.device("cuda")) is None
    assert gpu.bf16_peak(torch.device("cpu")) is None


def test_cpu_smoke_run_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(out.read_text())
    assert summary["bf16_peak_tflops"] is None
    rows = summary["rows"]
    expected = {
        ("APGD-2 training", "float32"),
        ("APGD-2 training", "bf16+cl"),
        ("clean forward", "float32"),
        ("clean forward", "bf16+cl"),
        ("soups scored", "bf16+cl"),
        ("AutoAttack APGD-CE (2 it)", "float32"),
    }
    for model in ("PreAct ResNet-18 (rf) 32px", "ResNet-50 64px"):
        own = [r for r in rows if r["model"] == model]
        assert {(r["measure"].split(" (")[0] if r["measure"].startswith("soups") else r["measure"], r["arithmetic"])
                for r in own} == expected  # fmt: skip
        for r in own:
            assert r["images_per_s"] > 0 and math.isfinite(r["images_per_s"])
            assert r["tflops"] == pytest.approx(r["gflop_per_image"] * r["images_per_s"] / 1e3)
            assert r["peak_fraction"] is None
    by = {(r["model"], r["measure"], r["arithmetic"]): r for r in rows}
    # PreAct ResNet-18 at 32 px: 0.56 GMAC a forward pass (2 FLOPs a multiply-add).
    forward = by[("PreAct ResNet-18 (rf) 32px", "clean forward", "float32")]["gflop_per_image"]
    assert forward == pytest.approx(1.11, rel=0.02)
    # APGD-2 training: 3 forward + input-gradient passes of the attack (≈ 2 forwards each), then a
    # forward + full backward (≈ 3 forwards).
    training = by[("PreAct ResNet-18 (rf) 32px", "APGD-2 training", "float32")]["gflop_per_image"]
    assert 7 * forward < training < 11 * forward
    # ResNet-50 at 64 px: 4.1 GMAC at 224 px scaled by (64/224)².
    assert by[("ResNet-50 64px", "clean forward", "float32")]["gflop_per_image"] == pytest.approx(0.67, rel=0.03)
    assert "n/a" in done.stdout
