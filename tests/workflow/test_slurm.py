"""The workflow on a real SLURM cluster: one node, four fake GPUs, all under a temp folder.

The fixture installs nothing. Where the daemons ``slurmctld``, ``slurmd`` and ``munged``
exist (Debian packages ``slurm-wlm`` and ``munge``; ``.ci/run`` installs them), it starts a
single-node cluster with its own ``slurm.conf``, munge key and socket, spool and state folders
and PID files, on loopback ports of its own, with four fake GPUs (gres whose ``File=`` entries
are character devices), and stops every daemon by PID at teardown. Elsewhere the test is
skipped and says why. Deselect it with ``-m "not slurm"``.

Every job is a SLURM job that starts Snakemake twice (sbatch, then srun) before its script,
~25 s each on the 2-core development machine. So by default the test runs the core of the
micro DAG (9 jobs: data, parent, fine-tunes, clean accuracy; a few minutes), and with
``ROBUSTSOUP_SLURM_DAG=full`` (.ci/run sets it) the micro config's whole DAG (~70 jobs,
~15 minutes there while other work shares the cores). A training of gpus: 2 runs its ranks as
a SLURM step of 2 tasks (two short runs of the parent alone). The profile checks at the top need
no SLURM and take seconds. The tests on the cluster are marked ``ci`` as well (minutes even for
the core): ``make test`` leaves them out, ``.ci/run`` runs them (issue 30: the suite's time).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from snakemake_output import job_stats, snakemake_command

MICRO = REPO / "tests" / "configs" / "micro.yaml"
PROFILE = REPO / "profiles" / "slurm"
DAEMONS = ("slurmctld", "slurmd", "munged")
CLIENTS = ("sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel")
N_GPUS = 4
# The fake node is sized like a cluster's GPU node, so that the profile's own requests
# (cpus_per_gpu, mem_mb) fit as written; nothing enforces them on this machine.
NODE_CPUS = 64
NODE_MEMORY_MB = 524288
RUN_TIMEOUT = 2400  # seconds; a run that hangs fails with squeue's view instead of waiting forever
# Which DAG goes through SLURM: `full`, the micro config's whole DAG (~70 jobs; .ci/run sets it),
# or by default `core`: data → parent → fine-tunes → clean accuracy of every base model (9 jobs,
# 8 of them GPU jobs, more than the 4 fake GPUs at once), a few minutes.
DAG_ENV = "ROBUSTSOUP_SLURM_DAG"


def _which(name: str) -> str | None:
    """A program on PATH, or in the sbin folders a non-login shell may leave off PATH."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def missing_programs() -> list[str]:
    return [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SlurmCluster:
    """slurmctld + slurmd + munged for one node, everything under ``root``."""

    def __init__(self, root: Path):
        self.root = root
        self.etc, self.run, self.logs = root / "etc", root / "run", root / "log"
        self.munge_dir = root / "munge"
        self.bin = root / "bin"
        self.conf = self.etc / "slurm.conf"
        self.node = "localhost"  # the node and controller name: loopback, whatever the machine is called
        self.socket = self.munge_dir / "munge.socket"
        self.jobcomp = self.logs / "jobcomp.txt"
        self.processes: dict[str, subprocess.Popen] = {}

    # --- environment of every SLURM client (sbatch, squeue, Snakemake) --------------------

    def env(self) -> dict[str, str]:
        # Nothing of an outer SLURM job or GPU selection leaks in: devices come from this cluster only.
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))
            and k not in ("CUDA_VISIBLE_DEVICES", "GPU_DEVICE_ORDINAL")
        }
        env["SLURM_CONF"] = str(self.conf)
        # The srun wrapper first: the jobstep plugin strips SLURM_CONF before its inner srun.
        env["PATH"] = os.pathsep.join([str(self.bin), str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def client(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(list(args), env=self.env(), capture_output=True, text=True, timeout=timeout)

    # --- set-up --------------------------------------------------------------------------

    def _write_files(self) -> None:
        for folder in (
            self.etc,
            self.run,
            self.logs,
            self.munge_dir,
            self.bin,
            self.root / "spool" / "ctld",
            self.root / "spool" / "d",
            self.root / "dev",
            self.root / "tmpfs",
        ):
            folder.mkdir(parents=True, exist_ok=True)
        self.munge_dir.chmod(0o700)
        key = self.munge_dir / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)

        devices = []
        for i in range(N_GPUS):
            device = self.root / "dev" / f"gpu{i}"
            try:
                os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))  # a character device, like /dev/null
            except PermissionError:
                device.symlink_to("/dev/null")  # not root: a link to a character device does too
            devices.append(device)

        ctld_port, slurmd_port = _free_port(), _free_port()
        user = _user()
        (self.etc / "plugstack.conf").write_text("")
        (self.etc / "gres.conf").write_text(
            "AutoDetect=off\n" + "".join(f"NodeName={self.node} Name=gpu File={d}\n" for d in devices)
        )
        self.conf.write_text(f"""\
ClusterName=robustsoup-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser={user}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={self.socket}
# Listen on the address "localhost" resolves to, not on every address of the machine.
CommunicationParameters=NoInAddrAny,NoCtldInAddrAny
StateSaveLocation={self.root / "spool" / "ctld"}
SlurmdSpoolDir={self.root / "spool" / "d"}
SlurmctldPidFile={self.run / "slurmctld.pid"}
SlurmdPidFile={self.run / "slurmd.pid"}
SlurmctldLogFile={self.logs / "slurmctld.log"}
SlurmdLogFile={self.logs / "slurmd.log"}
SlurmctldDebug=info
SlurmdDebug=info
DebugFlags=Gres
PlugStackConfig={self.etc / "plugstack.conf"}
TmpFS={self.root / "tmpfs"}
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# One line per finished job (state, start, end, TRES): the test's record, no slurmdbd needed.
JobCompType=jobcomp/filetxt
JobCompLoc={self.jobcomp}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
# Finished jobs stay visible to squeue for 5 minutes: the profile polls squeue (no sacct here).
MinJobAge=300
# Without a default, a job that asks for no memory takes the whole node.
DefMemPerCPU=1000
InactiveLimit=0
KillWait=5
Waittime=0
GresTypes=gpu
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS} Boards=1 SocketsPerBoard=1 CoresPerSocket={NODE_CPUS} ThreadsPerCore=1 RealMemory={NODE_MEMORY_MB} Gres=gpu:{N_GPUS} State=UNKNOWN
PartitionName=gpu Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")
        srun = _which("srun")
        wrapper = self.bin / "srun"
        wrapper.write_text(f'#!/bin/sh\nexport SLURM_CONF="{self.conf}"\nexec "{srun}" "$@"\n')
        wrapper.chmod(0o755)

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.out", "ab")  # noqa: SIM115 (the daemon's stdout for its lifetime)
        self.processes[name] = subprocess.Popen(
            [_which(name), *args],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env(),
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        log.close()

    def start(self, timeout: float = 60) -> None:
        self._write_files()
        self._spawn(
            "munged",
            "--foreground",
            "--force",
            f"--socket={self.socket}",
            f"--key-file={self.munge_dir / 'munge.key'}",
            f"--pid-file={self.run / 'munged.pid'}",
            f"--log-file={self.logs / 'munged.log'}",
            f"--seed-file={self.munge_dir / 'munged.seed'}",
        )
        self._wait(lambda: self.socket.exists(), timeout, "munged to open its socket")
        self._spawn("slurmctld", "-D", "-c", "-i", "-f", str(self.conf))
        self._wait(lambda: self.client("scontrol", "ping").returncode == 0, timeout, "slurmctld to answer")
        self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", self.node)
        self._wait(
            lambda: self.client("sinfo", "-h", "-o", "%T").stdout.strip() == "idle", timeout, "the node to come up idle"
        )

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {process.returncode} while waiting for {what}:\n" + self.log_tail()
                    )
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}:\n" + self.log_tail())

    def log_tail(self, lines: int = 30) -> str:
        out = []
        for path in sorted(self.logs.glob("*")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)

    # --- tear-down -----------------------------------------------------------------------

    def stop(self) -> None:
        """Cancel what is left, then stop slurmd, slurmctld and munged by PID (in that order)."""
        if "slurmctld" in self.processes and self.processes["slurmctld"].poll() is None:
            try:
                self.client("scancel", "--full", "--user", _user(), timeout=15)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:
                    if not self.client("squeue", "-h", "-t", "running,completing", timeout=15).stdout.strip():
                        break
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        # What the daemons started and left behind (a job step still reporting to a stopped
        # slurmctld, a job's processes): every process that carries this cluster's slurm.conf or
        # writes into its folder, by PID.
        for pid in self._leftover_pids():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def _leftover_pids(self) -> list[int]:
        marker, root, own = f"SLURM_CONF={self.conf}".encode(), str(self.root), {os.getpid(), os.getppid()}
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in own:
                continue
            try:
                if marker in (entry / "environ").read_bytes().split(b"\0") or any(
                    os.readlink(fd).startswith(root) for fd in (entry / "fd").iterdir()
                ):
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _die_with_parent() -> None:
    """In a daemon, before exec: get SIGKILL when the test process dies, however it dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


# --- the profile, checked without SLURM ---------------------------------------------------


def _profile() -> dict:
    return yaml.safe_load((PROFILE / "config.yaml").read_text())


def _gpu_rules_of_workflow() -> set[str]:
    """Rules whose own `resources:` ask for a GPU, read from workflow/rules/*.smk."""
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        blocks = re.split(r"^rule\s+(\w+)\s*:", smk.read_text(), flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2]):
            body = re.split(r"^\S", body, maxsplit=1, flags=re.M)[0]  # up to the next top-level statement
            if re.search(r"^\s+gpu\s*=\s*([1-9]|T\.gpus|lambda)", body, flags=re.M):
                rules.add(name)
    return rules


# A test wants failures fast and status polls often (the profile's values suit a real cluster).
FAST_POLLS = (
    "--retries",
    "0",
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--max-status-checks-per-second",
    "10",
)


def _training_rules_of_workflow() -> set[str]:
    """Rules whose gpu resource is a training section's gpus (the config's, not the profile's)."""
    rules = set()
    for smk in (REPO / "workflow" / "rules").glob("*.smk"):
        blocks = re.split(r"^rule\s+(\w+)\s*:", smk.read_text(), flags=re.M)
        for name, body in zip(blocks[1::2], blocks[2::2]):
            if "T.gpus(" in re.split(r"^\S", body, maxsplit=1, flags=re.M)[0]:
                rules.add(name)
    return rules


def test_slurm_profile_sizes_every_gpu_rule():
    """Every rule that asks for a GPU gets gpu, cpus_per_gpu, runtime and mem_mb from the profile."""
    profile = _profile()
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"  # no sacct without an accounting database
    assert "cpus_per_task" not in profile["default-resources"]  # it would override cpus_per_gpu
    gpu_rules = _gpu_rules_of_workflow()
    assert {"pretrain", "finetune", "evaluate_model"} <= gpu_rules
    training = _training_rules_of_workflow()
    assert {"pretrain", "finetune", "train_expert", "train_teacher"} <= training <= gpu_rules
    resources = profile["set-resources"]
    for rule in sorted(gpu_rules):
        assert rule in resources, f"rule {rule} asks for a GPU but profiles/slurm sets no resources for it"
        assert {"cpus_per_gpu", "runtime", "mem_mb"} <= set(resources[rule]), rule
        if rule in training:  # the training section's gpus decide (a profile's gpu would override them)
            assert "gpu" not in resources[rule], rule
        else:
            assert resources[rule]["gpu"] >= 1, rule
        assert profile["set-threads"][rule] == resources[rule]["cpus_per_gpu"], rule


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_profile_loads_in_snakemake(profile, tmp_path):
    """Every key of the profile is an option of Snakemake or of the pinned plugin (a dry run, no cluster)."""
    if profile == "slurm":
        pytest.importorskip(
            "snakemake_executor_plugin_slurm",
            reason="snakemake-executor-plugin-slurm is not installed (see requirements.txt)",
        )
    result = subprocess.run(
        snakemake_command(tmp_path, MICRO, "--profile", str(REPO / "profiles" / profile), "--dry-run"),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "evaluate_model" in result.stdout + result.stderr


# --- the real cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
    missing = missing_programs()
    if missing:
        pytest.skip(
            f"SLURM is not installed here (missing {', '.join(missing)}): install the Debian packages "
            "slurm-wlm and munge to run the real SLURM test (.ci/run does)"
        )
    pytest.importorskip(
        "snakemake_executor_plugin_slurm",
        reason="snakemake-executor-plugin-slurm is not installed (see requirements.txt)",
    )
    root, own_root = tmp_path_factory.mktemp("slurm"), False
    if len(str(root / "munge" / "munge.socket")) > 100:  # a UNIX socket path must stay short
        root, own_root = Path(tempfile.mkdtemp(prefix="robustsoup-slurm-")), True
    cluster = SlurmCluster(root)
    # Killed by SIGTERM (`timeout`, a CI runner): turn it into an interrupt, so that the running
    # Snakemake is killed and the teardown below still stops the cluster.
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if signal.getsignal(signal.SIGTERM) is _raise_interrupt:
            signal.signal(signal.SIGTERM, previous)
        if own_root:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class SlurmRun:
    workdir: Path
    output: str
    seconds: float
    planned: dict[str, int]  # rule → jobs in the DAG (Snakemake's job stats)
    submitted: dict[str, str]  # Snakemake job id → SLURM job id
    records: dict[str, dict[str, str]]  # SLURM job id → its jobcomp record
    logged: dict[str, dict]  # SLURM job id → what the job's rule log says


def _jobcomp(path: Path) -> dict[str, dict[str, str]]:
    records = {}
    for line in path.read_text().splitlines() if path.exists() else []:
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            records[fields["JobId"]] = fields
    return records


LOG_LINE = re.compile(
    r"rule (\w+) on \S+ with \d+ threads in SLURM job (\d+) "
    r"\(gpu=(\d+), CUDA_VISIBLE_DEVICES=([^)]*)\)"
)


def _logged(workdir: Path) -> dict[str, dict]:
    logged = {}
    for log in (workdir / "logs").rglob("*.log"):
        if (workdir / "logs" / "slurm") in log.parents:
            continue
        for rule, job_id, gpus, devices in LOG_LINE.findall(log.read_text(errors="replace")):
            logged[job_id] = {"rule": rule, "gpu": int(gpus), "devices": devices, "log": log}
    return logged


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory) -> SlurmRun:
    """The micro config's DAG (see DAG_ENV) through `--profile profiles/slurm` on the test cluster."""
    workdir = tmp_path_factory.mktemp("slurm-run")
    command = snakemake_command(
        workdir,
        MICRO,
        "--profile",
        str(PROFILE),
        *FAST_POLLS,
        *_targets(),
    )
    start = time.monotonic()
    try:
        result = subprocess.run(
            command, env=slurm_cluster.env(), cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT
        )
    except subprocess.TimeoutExpired as timeout:
        queue = slurm_cluster.client("squeue", "--states=all", "-o", "%i %j %T %M %R").stdout
        pytest.fail(
            f"the SLURM run did not finish in {RUN_TIMEOUT} s; squeue:\n{queue}\n"
            f"snakemake (last lines):\n{_text(timeout.stdout)[-3000:]}{_text(timeout.stderr)[-3000:]}"
        )
    seconds = time.monotonic() - start
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake failed after {seconds:.0f} s:\n{output[-6000:]}"
    print(f"\nthe micro config's {_dag()} DAG through SLURM took {seconds:.0f} s")
    return SlurmRun(
        workdir=workdir,
        output=output,
        seconds=seconds,
        planned=job_stats(output),
        submitted=dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output)),
        records=_jobcomp(slurm_cluster.jobcomp),
        logged=_logged(workdir),
    )


def _dag() -> str:
    dag = os.environ.get(DAG_ENV, "core")
    if dag not in ("core", "full"):
        raise ValueError(f"{DAG_ENV}={dag!r}: expected core or full")
    return dag


def _targets() -> list[str]:
    """Nothing (rule all: the whole DAG), or the clean metrics of every base model."""
    if _dag() == "full":
        return []
    from robustsoup.config import base_model_names
    from robustsoup.run_config import resolve_config

    config = resolve_config(yaml.safe_load(MICRO.read_text()))
    return [f"results/{config['dataset']}/seed-0/metrics/{m}/test/clean.tsv" for m in base_model_names(config)]


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


@pytest.mark.slurm
@pytest.mark.ci
def test_every_job_ran_as_a_completed_slurm_job(slurm_run):
    run = slurm_run
    for target in _targets() or ["results/digits/seed-0/metrics/all.tsv"]:
        assert (run.workdir / target).exists(), target
    planned = {rule: n for rule, n in run.planned.items() if rule != "all"}  # `all` has no action
    assert sum(planned.values()) >= (40 if _dag() == "full" else 5), planned
    # Every job of the DAG was submitted with sbatch, each as a SLURM job of its own ...
    assert len(run.submitted) == sum(planned.values()), (planned, run.submitted)
    slurm_ids = set(run.submitted.values())
    assert len(slurm_ids) == len(run.submitted)
    # ... which SLURM ran to completion ...
    for job_id in slurm_ids:
        assert run.records.get(job_id, {}).get("JobState") == "COMPLETED", (job_id, run.records.get(job_id))
    # ... and whose rule's script ran inside it (the log's first line names the SLURM job).
    assert set(run.logged) == slurm_ids, sorted(slurm_ids ^ set(run.logged))
    ran = {}
    for entry in run.logged.values():
        ran[entry["rule"]] = ran.get(entry["rule"], 0) + 1
    assert ran == planned
    # Each job's SLURM log (kept by the profile) is where the profile puts it.
    assert len(list((run.workdir / "logs" / "slurm").rglob("*.log"))) == len(slurm_ids)


@pytest.mark.slurm
@pytest.mark.ci
def test_gpu_jobs_got_the_gpus_they_asked_for(slurm_run):
    run = slurm_run
    gpu_rules = {rule for rule, res in _profile()["set-resources"].items() if res.get("gpu", 0) > 0}
    intervals = []
    for job_id, entry in run.logged.items():
        asked = entry["gpu"]
        if entry["rule"] in gpu_rules:
            assert asked == _profile()["set-resources"][entry["rule"]]["gpu"], entry
        elif entry["rule"] in _training_rules_of_workflow():
            assert asked == 1, entry  # the sections' default gpus: 1
        if asked == 0:
            assert entry["devices"] == "unset", f"job {job_id} ({entry['rule']}) asked for no GPU but sees {entry}"
            continue
        devices = entry["devices"].split(",")
        assert len(devices) == asked and len(set(devices)) == asked, (job_id, entry)
        assert set(devices) <= {str(i) for i in range(N_GPUS)}, (job_id, entry)
        intervals.append(
            (
                _time(run.records[job_id]["StartTime"]),
                _time(run.records[job_id]["EndTime"]),
                set(devices),
                job_id,
                entry["rule"],
            )
        )
    # GPU rules: the profile's, and the training rules (gpu = their section's gpus, 1 here).
    assert {rule for _, _, _, _, rule in intervals} == (gpu_rules | _training_rules_of_workflow()) & set(run.planned)
    # Jobs that ran at the same time never shared a device, and jobs did run at the same time.
    overlapping = 0
    for i, (start_a, end_a, devices_a, id_a, _) in enumerate(intervals):
        for start_b, end_b, devices_b, id_b, _ in intervals[i + 1 :]:
            if start_a < end_b and start_b < end_a:
                overlapping += 1
                assert not devices_a & devices_b, f"SLURM jobs {id_a} and {id_b} overlapped on GPU {devices_a}"
    assert overlapping > 0
    assert len(set().union(*(devices for _, _, devices, _, _ in intervals))) > 1


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@pytest.mark.slurm
@pytest.mark.ci
@pytest.mark.parametrize("launch", ["step", "allocation"])
def test_a_training_of_gpus_2_runs_its_ranks_as_two_slurm_tasks(slurm_cluster, tmp_path, launch):
    """The parent of the micro config with gpus: 2 (device cpu: gloo) through SLURM. ``step``: the profile
    as it is; the executor's one-task step runs the training, which starts its 2 ranks as a step of its
    own (srun --overlap). ``allocation``: the profile's recipe for nodes > 1 (mpi, tasks, tasks_per_gpu
    under the rule): a job of 2 tasks whose batch step runs the training, which starts the same step."""
    config = yaml.safe_load(MICRO.read_text())
    config["pretrain"]["gpus"] = 2
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    profile = PROFILE
    if launch == "allocation":
        recipe = _profile()
        recipe["set-resources"]["pretrain"].update(mpi="srun", tasks=2, tasks_per_gpu=1)
        profile = tmp_path / "profile"
        profile.mkdir()
        (profile / "config.yaml").write_text(yaml.safe_dump(recipe))
    workdir = tmp_path / "run"
    workdir.mkdir()
    command = snakemake_command(
        workdir,
        configfile,
        "--profile",
        str(profile),
        *FAST_POLLS,
        "results/digits/seed-0/models/linf.safetensors",
    )
    result = subprocess.run(
        command, env=slurm_cluster.env(), cwd=workdir, capture_output=True, text=True, timeout=RUN_TIMEOUT
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    meta = yaml.safe_load((workdir / "results" / "digits" / "seed-0" / "models" / "linf.json").read_text())
    assert meta["training"]["distributed"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": False}
    log = (workdir / "logs" / "pretrain" / "digits" / "seed-0" / "linf.log").read_text()
    assert "as a SLURM step: srun --ntasks=2 --nodes=1 --overlap --kill-on-bad-exit=1" in log
    for rank in (0, 1):  # both tasks trained and logged to the job's log
        assert f"INFO rank {rank} robustsoup.train.run: training linf" in log, log[-3000:]
    assert "INFO rank 0 robustsoup.train.run: wrote" in log and "INFO rank 1 robustsoup.train.run: wrote" not in log
    assert not list(workdir.rglob("*.ranks.pkl"))  # the pickled call is deleted
    submitted = dict(re.findall(r"Job (\d+) has been submitted with SLURM jobid (\d+)", output))
    job_id = LOG_LINE.search(log).group(2)
    assert job_id in submitted.values()
    job = slurm_cluster.client("scontrol", "show", "job", job_id).stdout
    assert "JobState=COMPLETED" in job, job
    assert f"NumTasks={2 if launch == 'allocation' else 1}" in job, job
