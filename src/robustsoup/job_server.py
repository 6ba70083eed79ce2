"""A warm job server for a local Snakemake run: every rule's script forked from one process that has
imported torch and the package once, instead of each job paying ~2 s to import them.

Snakemake starts each script job as a fresh ``python`` process; with torch (~1.7 s), the package
and pandas a job spent about 2.3 s before its work began, 17 % of the default DAG's summed job time.
With the server (:func:`start` from the Snakefile's ``onstart``, local runs only) a script's first
act is :func:`hand_over`: it sends the server the path of the script file Snakemake wrote (its
preamble holds the pickled job), its working folder, environment, arguments and its standard
streams (the file descriptors themselves); the server forks, the child takes them over and runs the
same script file exactly as a fresh interpreter would (``__main__``, the same
``robustsoup.snakemake_job`` set-up: threads, log, seed), and the client exits with the child's
status. The child computes what a fresh process computes: the server only imports modules, runs
no torch operation (so no thread pool exists at the fork) and draws no random number.

:func:`hand_over` returns (and the script runs in its own process, as before) whenever the server
cannot take the job: none started (a cluster run, ``ROBUSTSOUP_JOB_SERVER=0``, ``--no-hooks``), not
ready yet, another Python (``--use-conda``), another SLURM allocation, or the server is gone. A
client that dies (Snakemake cancelled the job) takes its child with it.

This module imports nothing heavy: the Snakefile imports it at parse time and every script before
torch; :func:`serve` does the imports in the server process.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# The switch (``0`` turns the server off) and the socket a run's jobs reach it by.
SWITCH = "ROBUSTSOUP_JOB_SERVER"
SOCKET = "ROBUSTSOUP_JOB_SERVER_SOCKET"
# Set in a child of the server: the script runs here, whatever the environment says.
CHILD = "ROBUSTSOUP_JOB_SERVER_CHILD"
# What the server imports once for every job: torch, the package's job set-up and each study's stages.
PRELOAD = (
    "torch",
    "pandas",
    "snakemake.script",
    "robustsoup.snakemake_job",
    "robustsoup.data.stages",
    "robustsoup.lp.stages",
    "robustsoup.soups.stages",
    "robustsoup.rws.stages",
    "robustsoup.distill.stages",
    "robustsoup.report.benchmarks",
)
_HEADER = struct.Struct("!I")
_STOP: list = []  # how to stop this process's server, once started
_STREAMS = 3  # stdin, stdout, stderr


def _identity() -> dict:
    """What a job and the server must share for a fork to be the job's own process."""
    return {"python": os.path.realpath(sys.executable), "slurm": os.environ.get("SLURM_JOB_ID")}


# ── the client: a rule's script ────────────────────────────────────────────────────────────────────


def hand_over(script: str | os.PathLike) -> None:
    """Run this job in the run's job server and exit with its status; return when there is none
    (or it refuses), so that the calling script runs the job itself.

    ``script`` is the file Snakemake executes (``__real_file__`` in a script: the script with its
    preamble; ``__file__`` there names the source under ``workflow/scripts``).
    """
    path = os.environ.get(SOCKET)
    if not path or os.environ.get(CHILD) or os.environ.get(SWITCH) == "0":
        return
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        client.connect(path)
        request = {
            **_identity(),
            "script": os.path.abspath(script),
            "cwd": os.getcwd(),
            "argv": sys.argv,
            "env": dict(os.environ),
        }
        payload = json.dumps(request).encode()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        socket.send_fds(client, [_HEADER.pack(len(payload)) + payload], list(range(_STREAMS)))
        answers = client.makefile("rb")
        accepted = answers.readline()
    except OSError:  # no server (not started, not ready, gone): this process runs the job
        client.close()
        return
    if not accepted.startswith(b"accepted"):  # refused before forking: this process runs the job
        client.close()
        return
    status = answers.readline().strip()  # the child's exit status, when it ends
    client.close()
    if not status:
        print("robustsoup job server: the server ended before the job did", file=sys.stderr)
        raise SystemExit(1)
    raise SystemExit(int(status))


# ── the server ─────────────────────────────────────────────────────────────────────────────────────


def start(
    threads: int, folder: str | os.PathLike | None = None, preload: tuple[str, ...] = PRELOAD
) -> subprocess.Popen | None:
    """Start the server for this (Snakemake) process's jobs and point them at it (``SOCKET`` in
    ``os.environ``, which every job inherits); stopped when this process exits. ``threads`` is what
    Snakemake sets ``OMP_NUM_THREADS`` and its kin to in a job (the jobs' common ``threads``), so the
    libraries the server imports start as a job's would. Nothing (None) when ``ROBUSTSOUP_JOB_SERVER=0``.
    """
    if os.environ.get(SWITCH) == "0":
        return None
    if _STOP:  # a second run in this process (Snakemake's API): its own server, the last one gone
        _STOP.pop()()
    folder = Path(tempfile.mkdtemp(prefix="robustsoup-jobs-", dir=folder))
    path = folder / "server.sock"
    env = dict(os.environ)
    for name in ("OMP", "GOTO", "OPENBLAS", "MKL", "NUMEXPR"):
        env[f"{name}_NUM_THREADS"] = str(threads)
    env["VECLIB_MAXIMUM_THREADS"] = str(threads)
    env.pop(SOCKET, None)
    server = subprocess.Popen(
        [sys.executable, "-m", "robustsoup.job_server", str(path), *preload], env=env, stdin=subprocess.DEVNULL
    )
    os.environ[SOCKET] = str(path)

    def stop() -> None:
        os.environ.pop(SOCKET, None)
        if server.poll() is None:
            server.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=5)
        with contextlib.suppress(OSError):
            path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()

    atexit.register(stop)
    _STOP.append(stop)
    return server


def serve(path: str | os.PathLike, preload: tuple[str, ...] = PRELOAD) -> None:
    """Import ``preload``, then listen on the Unix socket ``path`` and fork a child per job until
    this process's parent (the Snakemake run) is gone or a SIGTERM arrives."""
    parent = os.getppid()
    for name in preload:
        importlib.import_module(name)
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, ("listen", None))
    running: dict[int, tuple[socket.socket, int]] = {}  # child pid → (connection, pidfd)
    stopping = False

    def on_term(*_):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    try:
        while not stopping and os.getppid() == parent:
            for key, _ in selector.select(timeout=1.0):
                kind, pid = key.data
                if kind == "listen":
                    conn, _ = listener.accept()
                    child = _start_job(conn, listener, selector)
                    if child is not None:
                        pidfd = os.pidfd_open(child)
                        running[child] = (conn, pidfd)
                        selector.register(conn, selectors.EVENT_READ, ("client", child))
                        selector.register(pidfd, selectors.EVENT_READ, ("child", child))
                elif kind == "client":  # the client hung up before its child ended: end the child
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGTERM)
                    selector.unregister(running[pid][0])
                else:  # the child ended: tell its client
                    conn, pidfd = running.pop(pid)
                    _, status = os.waitpid(pid, 0)
                    code = os.waitstatus_to_exitcode(status)
                    with contextlib.suppress(OSError):
                        conn.sendall(f"{code if code >= 0 else 128 - code}\n".encode())
                    for resource in (conn, pidfd):
                        with contextlib.suppress(KeyError, ValueError):
                            selector.unregister(resource)
                    conn.close()
                    os.close(pidfd)
    finally:
        for pid in running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        listener.close()
        with contextlib.suppress(OSError):
            path.unlink()


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    message, fds, _, _ = socket.recv_fds(conn, 1 << 16, _STREAMS)
    if len(message) < _HEADER.size:
        raise OSError("a truncated request")
    (size,) = _HEADER.unpack(message[: _HEADER.size])
    payload = message[_HEADER.size :]
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise OSError("a truncated request")
        payload += chunk
    return json.loads(payload), fds


def _start_job(conn: socket.socket, listener: socket.socket, selector: selectors.BaseSelector) -> int | None:
    """Fork the child that runs one request's script; None when the request is refused."""
    fds: list[int] = []
    try:
        request, fds = _receive(conn)
        if len(fds) != _STREAMS or {k: request.get(k) for k in _identity()} != _identity():
            raise OSError("another Python or SLURM allocation")
        conn.sendall(b"accepted\n")
    except (OSError, ValueError):
        for fd in fds:
            os.close(fd)
        conn.close()
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    pid = os.fork()
    if pid:
        for fd in fds:
            os.close(fd)
        return pid
    # The child: this job's process from here on.
    selector.close()
    listener.close()
    conn.close()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os._exit(_run_script(request))


def _run_script(request: dict) -> int:
    """Run the request's script as ``__main__`` in its folder, environment and arguments; its exit status."""
    import runpy

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ[CHILD] = "1"
    sys.argv = list(request["argv"])
    sys.path[0] = os.path.dirname(request["script"])  # as `python script.py` puts it
    code = 0
    try:
        runpy.run_path(request["script"], run_name="__main__")
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    return code


if __name__ == "__main__":
    serve(sys.argv[1], tuple(sys.argv[2:]))
