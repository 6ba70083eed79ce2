"""The warm job server (robustsoup.job_server): a script handed over runs in a fork of the server with
the client's folder, environment, arguments and streams, and the client exits with its status; without
a server, or refused, the script runs in its own process; a client that dies takes its child along.
Light servers (no torch preloaded), so each test takes a second or so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustsoup import job_server

SCRIPT = """
import json, os, sys, time
from robustsoup.job_server import hand_over

if __name__ == "__main__":
    hand_over(__file__)
    print("hello from the job", flush=True)
    print("a warning", file=sys.stderr, flush=True)
    out = {{"pid": os.getpid(), "cwd": os.getcwd(), "argv": sys.argv, "marker": os.environ.get("JOB_MARKER"),
           "child": os.environ.get("{child}"), "path0": sys.path[0]}}
    with open(os.environ["JOB_OUT"], "w") as f:
        json.dump(out, f)
    time.sleep(float(os.environ.get("JOB_SLEEP", "0")))
    sys.exit(int(os.environ.get("JOB_EXIT", "0")))
"""


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A running server (preloading only json) for this test's jobs; stopped after it."""
    monkeypatch.delenv(job_server.SOCKET, raising=False)
    monkeypatch.delenv(job_server.SWITCH, raising=False)
    process = job_server.start(1, tmp_path, preload=("json",))
    socket_path = Path(os.environ[job_server.SOCKET])
    deadline = time.monotonic() + 60
    while not socket_path.exists():
        assert process.poll() is None, "the job server ended at start"
        assert time.monotonic() < deadline, "the job server did not listen within 60 s"
        time.sleep(0.05)
    yield process
    process.terminate()
    process.wait(timeout=10)
    monkeypatch.delenv(job_server.SOCKET, raising=False)


def run_job(tmp_path: Path, **env) -> tuple[subprocess.CompletedProcess, dict]:
    import json

    script = tmp_path / "scripts" / "job.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(SCRIPT.format(child=job_server.CHILD))
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    out = tmp_path / "out.json"
    environment = {**os.environ, "JOB_OUT": str(out), "JOB_MARKER": "m1", **env}
    done = subprocess.run(
        [sys.executable, str(script), "an-argument"],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return done, json.loads(out.read_text())


def test_a_handed_over_job_runs_in_the_server_with_the_clients_folder_streams_and_status(server, tmp_path):
    done, seen = run_job(tmp_path, JOB_EXIT="3")
    assert done.returncode == 3, done.stderr
    assert seen["child"] == "1", "the job ran in its own process, not in the server"
    assert "hello from the job" in done.stdout and "a warning" in done.stderr
    assert seen["cwd"] == str(tmp_path / "work")
    assert seen["marker"] == "m1" and seen["argv"][1:] == ["an-argument"]
    assert seen["path0"] == str(tmp_path / "scripts")
    done, seen = run_job(tmp_path)
    assert done.returncode == 0 and seen["child"] == "1"


def test_without_a_server_or_when_it_is_off_the_script_runs_itself(tmp_path, monkeypatch):
    monkeypatch.setenv(job_server.SOCKET, str(tmp_path / "nobody.sock"))
    done, seen = run_job(tmp_path, JOB_EXIT="2")
    assert done.returncode == 2 and seen["child"] is None and "hello from the job" in done.stdout


def test_switched_off_the_server_takes_no_job(server, tmp_path):
    done, seen = run_job(tmp_path, **{job_server.SWITCH: "0"})
    assert done.returncode == 0 and seen["child"] is None


def test_a_job_of_another_slurm_allocation_is_refused_and_runs_itself(server, tmp_path):
    done, seen = run_job(tmp_path, SLURM_JOB_ID="424242")
    assert done.returncode == 0 and seen["child"] is None


def test_a_client_that_dies_takes_its_job_along(server, tmp_path):
    import json

    script = tmp_path / "scripts" / "job.py"
    script.parent.mkdir(exist_ok=True)
    script.write_text(SCRIPT.format(child=job_server.CHILD))
    out = tmp_path / "out.json"
    env = {**os.environ, "JOB_OUT": str(out), "JOB_SLEEP": "60"}
    client = subprocess.Popen([sys.executable, str(script)], env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not out.exists() or not out.read_text():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    child = json.loads(out.read_text())["pid"]
    assert child != client.pid
    client.send_signal(signal.SIGTERM)
    client.wait(timeout=10)
    deadline = time.monotonic() + 10
    while alive(child):
        assert time.monotonic() < deadline, "the job outlived its client"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_the_benchmark_table_takes_a_jobs_own_peak_memory(tmp_path):
    """A forked job is no child of Snakemake's, so its benchmark's max_rss is the client's: the job's
    closing record (max_rss_mb) wins where it has one."""
    from robustsoup.report.benchmarks import job_table

    bench, logs = tmp_path / "benchmarks" / "evaluate_model", tmp_path / "logs" / "evaluate_model"
    bench.mkdir(parents=True)
    logs.mkdir(parents=True)
    for name, record in (("a", " max_rss_mb=812.50"), ("b", "")):
        (bench / f"{name}.tsv").write_text("s\tmax_rss\n3.0\t25.1\n")
        (logs / f"{name}.log").write_text(f"x robustsoup-job: rule=evaluate_model inside_s=2.5{record}\n")
    table = job_table(tmp_path / "benchmarks", tmp_path / "logs").set_index("job")
    assert table.loc["evaluate_model/a.tsv", "max_rss_mb"] == 812.5
    assert table.loc["evaluate_model/b.tsv", "max_rss_mb"] == 25.1


def test_a_second_start_in_one_process_stops_the_first_server(tmp_path, monkeypatch):
    monkeypatch.delenv(job_server.SWITCH, raising=False)
    first = job_server.start(1, tmp_path, preload=())
    second = job_server.start(1, tmp_path, preload=())
    try:
        assert first.wait(timeout=10) is not None and second.poll() is None
    finally:
        second.terminate()
        second.wait(timeout=10)
        monkeypatch.delenv(job_server.SOCKET, raising=False)
