"""GPU leases: concurrent jobs get distinct devices; a killed job frees its device."""

import os
import signal
import subprocess
import sys
import time

import pytest

from robustsoup.device import NoFreeDeviceError, gpu_lease, select_device

HOLDER = """
import os, sys, time
from robustsoup.device import gpu_lease
with gpu_lease(lease_dir=sys.argv[1], timeout=30, poll=0.05) as gpu:
    with open(sys.argv[2], "w") as out:
        out.write(os.environ["CUDA_VISIBLE_DEVICES"])
    time.sleep(float(sys.argv[3]))
"""


def _start(tmp_path, name, hold, env):
    return subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "leases"), str(tmp_path / name), str(hold)], env=env
    )


def test_four_concurrent_jobs_get_four_distinct_devices(tmp_path):
    env = {**os.environ, "ROBUSTSOUP_GPU_IDS": "0,1,2,3"}
    env.pop("SLURM_JOB_ID", None)
    jobs = [_start(tmp_path, f"job{i}", 2.0, env) for i in range(4)]
    assert [job.wait(timeout=60) for job in jobs] == [0, 0, 0, 0]
    devices = [(tmp_path / f"job{i}").read_text() for i in range(4)]
    assert sorted(devices) == ["0", "1", "2", "3"]


def test_a_killed_job_frees_its_device(tmp_path):
    env = {**os.environ, "ROBUSTSOUP_GPU_IDS": "7"}
    env.pop("SLURM_JOB_ID", None)
    victim = _start(tmp_path, "victim", 60.0, env)
    for _ in range(200):
        if (tmp_path / "victim").exists():
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    successor = _start(tmp_path, "successor", 0.0, env)
    assert successor.wait(timeout=30) == 0
    assert (tmp_path / "successor").read_text() == "7"


def test_no_free_device_times_out_with_a_message(tmp_path):
    with gpu_lease(["3"], lease_dir=tmp_path, timeout=5) as first:
        assert first == "3" and os.environ["CUDA_VISIBLE_DEVICES"] == "3"
        with (
            pytest.raises(NoFreeDeviceError, match=r"GPUs \['3'\] stayed leased"),
            gpu_lease(["3"], lease_dir=tmp_path, timeout=0.2, poll=0.05),
        ):
            pass


def test_nothing_to_lease_on_a_cpu_machine_or_under_slurm(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTSOUP_GPU_IDS", "")
    with gpu_lease(lease_dir=tmp_path) as leased:
        assert leased is None
    # Under SLURM the job's GPUs are leased too, in a folder of the job's own (tests/foundations/test_gpu_path.py).
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    with gpu_lease(lease_dir=tmp_path) as leased:
        assert leased is None and os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    assert str(select_device("cpu")) == "cpu"
    with pytest.raises(ValueError, match="unknown device"):
        select_device("tpu")


@pytest.mark.parametrize("tf32", [True, False])
def test_cuda_fast_paths_follow_the_tf32_key_and_always_benchmark_cudnn(monkeypatch, tf32):
    import torch

    from robustsoup.device import configure_cuda

    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", torch.backends.cudnn.deterministic)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert configure_cuda(tf32) == {}  # no CUDA: nothing is touched
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == saved[:2]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the flags are process settings; no GPU needed
    try:
        assert configure_cuda(tf32) == {"tf32": tf32, "cudnn_benchmark": True, "cudnn_deterministic": False}
        assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32
        assert torch.backends.cudnn.benchmark is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def test_keep_freed_memory_tunes_glibc_and_stays_off_where_asked_or_elsewhere(monkeypatch):
    """Every job raises glibc's mmap and trim thresholds (device.keep_freed_memory); ROBUSTSOUP_MALLOC_TUNING=0
    leaves glibc's defaults, and a C library that is not glibc is left alone."""
    from robustsoup import device

    monkeypatch.setenv(device.MALLOC_ENV, "0")
    assert device.keep_freed_memory() is False
    monkeypatch.delenv(device.MALLOC_ENV)

    def not_glibc(name):
        raise ValueError(f"unrecognized configuration name {name}")

    with monkeypatch.context() as m:
        m.setattr(device.os, "confstr", not_glibc)
        assert device.keep_freed_memory() is False
    if not device._glibc():
        pytest.skip("not glibc: nothing to tune")
    assert device.keep_freed_memory() is True
