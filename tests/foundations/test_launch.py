"""Launching a data-parallel training: train_and_checkpoint with gpus: 2 spawns its ranks (gloo on the CPU),
SLURM steps form a group from SLURM's variables, and GPU leases come in sets of N."""

import logging
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from robustsoup.checkpoint import load_checkpoint
from robustsoup.data import ImageSplit
from robustsoup.device import NoFreeDeviceError, gpu_lease
from robustsoup.train import distributed
from robustsoup.train.loop import TrainSettings
from robustsoup.train.policies import CleanInputs
from robustsoup.train.run import train_and_checkpoint

from conftest import tiny_meta

N, BATCH = 20, 7  # batches of 7, 7, 6: shards of 4/3, 4/3, 3/3


class _Killed(RuntimeError):
    pass


@dataclass
class _KilledAt(CleanInputs):
    """Clean training that dies at its ``at``-th batch (a job killed in epoch 2), in every rank."""

    at: int = 0

    def __post_init__(self) -> None:
        self.calls = 0

    def __call__(self, model, x, y):
        self.calls += 1
        if self.calls == self.at:
            raise _Killed(f"killed at batch {self.at}")
        return x


def _data() -> ImageSplit:
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(N, 3, 32, 32, generator=generator) * 255).to(torch.uint8)
    return ImageSplit(images, torch.randint(0, 10, (N,), generator=generator), "digits", "train")


def _train(out, gpus: int, policy=None) -> dict:
    torch.manual_seed(0)
    meta = tiny_meta(name="launched")
    meta.training = {"epochs": 2, "test": "launch"}
    model = meta.build()
    settings = TrainSettings(epochs=2, lr=0.05, batch_size=BATCH, seed=1, gpus=gpus, sync_batchnorm=True)
    train_and_checkpoint(model, meta, _data(), policy or CleanInputs(), settings, out, torch.device("cpu"))
    return {k: v.clone() for k, v in model.state_dict().items()}


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


def test_gpus_2_launches_two_ranks_that_train_one_process_weights_and_resume_after_a_kill(tmp_path, monkeypatch):
    one = _train(tmp_path / "one.safetensors", gpus=1)
    log_path = tmp_path / "job.log"
    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)
    # stderr written to a file, as snakemake_job redirects a job's.
    with open(log_path, "a", encoding="utf-8", buffering=1) as job_log, monkeypatch.context() as redirected:
        redirected.setattr(sys, "stderr", job_log)
        two = _train(tmp_path / "two.safetensors", gpus=2)
    # The model handed in holds the ranks' weights: the one process's, BatchNorm synchronised.
    _close(two, one, atol=1e-5)
    state, meta = load_checkpoint(tmp_path / "two.safetensors")
    _close(state, two, atol=0)
    assert meta.training["distributed"] == {"world_size": 2, "backend": "gloo", "sync_batchnorm": True}
    assert "distributed" not in load_checkpoint(tmp_path / "one.safetensors")[1].training
    history_one = load_checkpoint(tmp_path / "one.safetensors")[1].metrics["train_history"]
    assert [r["loss"] for r in meta.metrics["train_history"]] == pytest.approx(
        [r["loss"] for r in history_one], abs=1e-5
    )
    text = log_path.read_text()
    # Every rank's lines reach the job's log, tagged with the rank.
    assert "INFO rank 0 robustsoup.train.run: training launched" in text
    assert "INFO rank 1 robustsoup.train.run: training launched" in text
    assert "wrote" in text and not (tmp_path / "two.resume.pt").exists()

    # Killed in epoch 2 (after epoch 1's state was saved): the error comes back, the state stays.
    out = tmp_path / "killed.safetensors"
    with pytest.raises(Exception, match="_Killed: killed at batch 4"):
        _train(out, gpus=2, policy=_KilledAt(at=4))  # 3 batches an epoch: the first of epoch 2
    resume = torch.load(tmp_path / "killed.resume.pt", weights_only=False)
    assert resume["epoch"] == 1 and len(resume["ranks"]) == 2 and not out.exists()
    resumed = _train(out, gpus=2)
    _close(resumed, two, atol=0)
    assert not (tmp_path / "killed.resume.pt").exists()


def test_processes_launched_must_be_the_gpus_asked_for(monkeypatch):
    for key in ("WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        monkeypatch.delenv(key, raising=False)
    assert distributed.launch_needed(2) and not distributed.launch_needed(1)
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert not distributed.launch_needed(2)
    with pytest.raises(RuntimeError, match=r"asks for gpus: 2 but 3 process\(es\) were launched.*or set gpus: 3"):
        distributed.from_environment(2, torch.device("cpu"))
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_PROCID", "1")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NODELIST", "n1")
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    with pytest.raises(RuntimeError, match="asks for gpus: 2 but 4 process"):
        distributed.from_environment(2, torch.device("cpu"))
    # One process inside an allocation of several tasks (snakemake run in `sbatch -n 4`) is one process.
    assert distributed.from_environment(1, torch.device("cpu")) is None


def test_a_slurm_step_gives_rank_world_size_local_rank_and_master():
    env = {
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODELIST": "gpu[07-08,11],login2",
        "SLURM_JOB_ID": "123456",
    }
    assert distributed.slurm_group(env) == {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "MASTER_ADDR": "gpu07",
        "MASTER_PORT": str(20000 + 123456 % 20000),
    }
    assert distributed.launched_processes(env) == 8
    assert distributed.slurm_group({**env, "SLURM_NODELIST": "node3,node4", "MASTER_PORT": "2999"})["MASTER_ADDR"] == (
        "node3"
    )
    assert distributed.slurm_group({**env, "MASTER_PORT": "2999"})["MASTER_PORT"] == "2999"
    # A job's single task (the SLURM executor's `srun -n1`) is no group: the training launches its ranks.
    assert distributed.slurm_group({**env, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    assert distributed.launched_processes({"SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) == 1
    with pytest.raises(RuntimeError, match=r"without \['SLURM_LOCALID'\]"):
        distributed.slurm_group({k: v for k, v in env.items() if k != "SLURM_LOCALID"})


def test_a_job_leases_as_many_gpus_as_its_training_runs_ranks(tmp_path, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with gpu_lease(["0", "1", "2"], lease_dir=tmp_path, count=2) as pair:
        assert pair == "0,1"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"
        with (
            pytest.raises(NoFreeDeviceError, match="fewer than 2 of GPUs"),
            gpu_lease(["0", "1", "2"], lease_dir=tmp_path, count=2, timeout=0.2, poll=0.05),
        ):
            pass
        with gpu_lease(["0", "1", "2"], lease_dir=tmp_path, count=1, timeout=1) as last:
            assert last == "2"
    with (
        pytest.raises(ValueError, match="asks for 4 GPUs but this machine offers 3"),
        gpu_lease(["0", "1", "2"], lease_dir=tmp_path, count=4),
    ):
        pass


def test_under_slurm_the_ranks_are_a_step_of_gpus_tasks_over_nodes(monkeypatch):
    command = distributed.srun_command(8, 2, "/shared/run/models/linf.ranks.pkl")
    assert command[:6] == ["srun", "--ntasks=8", "--nodes=2", "--overlap", "--kill-on-bad-exit=1", "--export=ALL"]
    assert command[6:] == [sys.executable, "-m", "robustsoup.train.rank_step", "/shared/run/models/linf.ranks.pkl"]
    # The calling step's own variables (the executor's `srun -n1`) would be taken as srun's options: dropped.
    step = {
        "SLURM_JOB_ID": "9",
        "SLURM_CONF": "/etc/s.conf",
        "SLURM_NTASKS": "1",
        "SLURM_NNODES": "1",
        "SLURM_CPUS_PER_GPU": "8",
        "SRUN_CPUS_PER_TASK": "8",
        "PATH": "/bin",
        "OMP_NUM_THREADS": "4",
    }
    assert distributed.srun_environment(step) == {
        "SLURM_JOB_ID": "9",
        "SLURM_CONF": "/etc/s.conf",
        "PATH": "/bin",
        "OMP_NUM_THREADS": "4",
    }
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert not distributed.in_slurm_job() and distributed.in_slurm_job({"SLURM_JOB_ID": "9"})
    with pytest.raises(RuntimeError, match=r"nodes: 2, but this process runs outside a SLURM job.*profiles/slurm"):
        distributed.run_as_ranks(print, 4, device=torch.device("cpu"), nodes=2)
    monkeypatch.setenv("SLURM_JOB_ID", "9")
    monkeypatch.setenv("PATH", str(Path(__file__).parent))  # no srun here
    with pytest.raises(RuntimeError, match=r"SLURM_JOB_ID=9\) has no srun on PATH"):
        distributed.run_as_ranks(print, 4, device=torch.device("cpu"), nodes=2, call_path="unused")
    with pytest.raises(ValueError, match="nodes must be an integer from 1 to gpus"):
        TrainSettings(epochs=1, lr=0.1, gpus=2, nodes=3)


def _one_task_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "WORLD_SIZE", "RANK", "LOCAL_RANK"))}
    src = str(Path(distributed.__file__).parents[2])  # this checkout's package first
    env.update(
        SLURM_JOB_ID="4242",
        SLURM_PROCID="0",
        SLURM_NTASKS="1",
        SLURM_LOCALID="0",
        SLURM_NODELIST="localhost",
        PYTHONPATH=os.pathsep.join([src, env.get("PYTHONPATH", "")]),
    )
    return env


def test_the_rank_entry_point_runs_the_pickled_training_in_a_one_task_step(tmp_path):
    """What every task of `srun --ntasks=N` runs, here as the one task of a step: it joins the group,
    trains from the pickled call (RNG state, log file included) and rank 0 writes the checkpoint."""
    from robustsoup.data import options as loading_options
    from robustsoup.train.run import _InRank

    torch.manual_seed(0)
    meta = tiny_meta(name="stepped")
    meta.training = {"epochs": 1, "test": "rank_step"}
    out = tmp_path / "stepped.safetensors"
    settings = TrainSettings(epochs=1, lr=0.05, batch_size=BATCH, seed=1)
    args = (meta.build(), meta, _data(), CleanInputs(), settings, str(out), torch.device("cpu"))
    log_path = tmp_path / "job.log"
    log_path.touch()
    call = distributed._RankCall(
        _InRank(train_and_checkpoint, vars(loading_options.current()), False),
        pickle.dumps(args),
        torch.get_rng_state(),
        1,
        str(log_path),
        logging.INFO,
        "gloo",
    )
    call_path = tmp_path / "stepped.ranks.pkl"
    call_path.write_bytes(pickle.dumps(call))
    module = [sys.executable, "-m", "robustsoup.train.rank_step"]
    done = subprocess.run([*module, str(call_path)], env=_one_task_env(tmp_path), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    state, written = load_checkpoint(out)
    assert written.name == "stepped" and "distributed" not in written.training
    # The weights of the same training in this process, from the same RNG state: the call carried it.
    here = pickle.loads(call.payload)
    torch.set_rng_state(call.rng_state)
    train_and_checkpoint(*here[:5], tmp_path / "here.safetensors", *here[6:])
    _close(state, load_checkpoint(tmp_path / "here.safetensors")[0], atol=0)
    assert "INFO rank 0 robustsoup.train.run: training stepped" in log_path.read_text()
    # Outside a SLURM step it refuses with what to do; a wrong command line says its usage.
    env = {k: v for k, v in _one_task_env(tmp_path).items() if k != "SLURM_PROCID"}
    refused = subprocess.run([*module, str(call_path)], env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "runs as a task of a SLURM step" in refused.stderr
    usage = subprocess.run(module, env=env, capture_output=True, text=True)
    assert usage.returncode != 0 and "usage: python -m robustsoup.train.rank_step <call file>" in usage.stderr
