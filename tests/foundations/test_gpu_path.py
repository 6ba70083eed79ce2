"""The multi-GPU, SLURM and fp16 paths (issue 29), each checked on the CPU: fake nvidia-smi and SLURM
variables, gloo ranks, float16 autocast on the CPU, mode checks of the lease folder and files (a second
Unix user cannot run this interpreter here)."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pickle
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from robustsoup.data import FileSplit, ImageSplit, loading
from robustsoup.device import Arithmetic, gpu_lease, visible_gpu_ids
from robustsoup.train import distributed
from robustsoup.train.loop import (
    CleanInputs,
    EpochState,
    SupervisedStep,
    TrainingDivergedError,
    TrainSettings,
    run_epochs,
    train_model,
)

from data_fixtures import write_png

REPO = Path(__file__).resolve().parents[2]


def _close(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


@pytest.fixture
def fake_gpus(tmp_path, monkeypatch):
    """An nvidia-smi on PATH that lists GPUs 0-3, and no GPU list or restriction from the environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\nprintf '0\\n1\\n2\\n3\\n'\n")
    smi.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key in ("ROBUSTSOUP_GPU_IDS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID", "ROBUSTSOUP_GPU_LEASE_DIR"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path / "leases"


# ----------------------------------------------------------------------------- 1: ranks pinned to their GPU


def test_spawned_ranks_are_pinned_to_their_gpu_before_the_group_forms(monkeypatch):
    """Only a GPU proves nccl's behaviour; this checks the call order and arguments: every spawned CUDA
    rank (and one formed from torchrun's variables) calls set_device(its GPU) before init_process_group,
    and hands nccl the same device as device_id."""
    calls = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(
        distributed.dist, "init_process_group", lambda **kw: calls.append(("init", kw.get("device_id")))
    )
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: None)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    spawned = {}
    monkeypatch.setattr(torch.multiprocessing, "spawn", lambda fn, args, nprocs, join: spawned.update(fn=fn, args=args))
    distributed.spawn(lambda: calls.append(("run",)), 2, backend="nccl")
    spawned["fn"](1, *spawned["args"])  # what rank 1 of the two runs
    assert calls == [("set_device", 1), ("init", torch.device("cuda", 1)), ("run",)]

    calls.clear()
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed, "current", lambda sync_batchnorm=False: "group")
    assert distributed.from_environment(2, torch.device("cuda")) == "group"
    assert calls == [("set_device", 1), ("init", torch.device("cuda", 1))]


# ----------------------------------------------------------------------------- 2: leases inside a SLURM allocation


def test_snakemake_inside_a_slurm_allocation_leases_distinct_gpus_and_ports(fake_gpus, monkeypatch):
    from robustsoup.device import lease_folder

    monkeypatch.setenv("SLURM_JOB_ID", "777")
    with gpu_lease(lease_dir=fake_gpus, timeout=1, poll=0.05) as first:
        mine = os.environ.pop("CUDA_VISIBLE_DEVICES")  # a concurrent job's process does not see this one's
        with gpu_lease(lease_dir=fake_gpus, timeout=1, poll=0.05) as second:
            assert (first, second) == ("0", "1") and os.environ["CUDA_VISIBLE_DEVICES"] == "1"
        os.environ["CUDA_VISIBLE_DEVICES"] = mine
    # The job's own folder: a job the SLURM executor submitted, whose GPUs CUDA numbers from 0 again,
    # never waits on another job's lock files.
    assert lease_folder(fake_gpus) == fake_gpus / "slurm-777" and (fake_gpus / "slurm-777" / "gpu0.lock").exists()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")  # what SLURM sets for the allocation's GPUs
    with gpu_lease(lease_dir=fake_gpus, count=2, timeout=1) as both:
        assert both == "0,1"
    # Two trainings' SLURM steps in one job (steps 1 and 2) get different master ports.
    env = {"SLURM_NTASKS": "2", "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODELIST": "n1"}
    ports = {distributed.slurm_group({**env, "SLURM_JOB_ID": "777", "SLURM_STEP_ID": s})["MASTER_PORT"] for s in "12"}
    assert len(ports) == 2


# ----------------------------------------------------------------------------- 3: CPU rules select no GPU


def _fake_snakemake(tmp_path, rule: str, gpus: int, device: str) -> SimpleNamespace:
    import yaml

    config = yaml.safe_load((REPO / "tests" / "configs" / "micro.yaml").read_text())
    config["device"] = device
    resources = {"gpu": gpus} if gpus else {}
    return SimpleNamespace(
        log=[str(tmp_path / f"{rule}.log")], threads=1, config=config, rule=rule, resources=resources
    )


def test_rules_without_a_gpu_compute_on_the_cpu_and_evaluation_is_deterministic(tmp_path, monkeypatch):
    from robustsoup.snakemake_job import TRAINING_RULES, snakemake_job

    monkeypatch.setenv("ROBUSTSOUP_GPU_IDS", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # device: cuda, as under SLURM, where a CPU rule's job sees no GPU.
    for rule in ("prepare_data", "corrupt_split", "make_soup"):
        with snakemake_job(_fake_snakemake(tmp_path, rule, 0, "cuda")) as job:
            assert job.device == torch.device("cpu")
    with (
        pytest.raises(RuntimeError, match="device 'cuda' was asked for"),
        snakemake_job(_fake_snakemake(tmp_path, "evaluate_model", 1, "cuda")),
    ):
        pass
    # With CUDA: the evaluation rules compute with deterministic cuDNN kernels, trainings benchmark them.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake")
    saved = {k: getattr(torch.backends.cudnn, k) for k in ("benchmark", "deterministic", "allow_tf32")}
    saved_matmul = torch.backends.cuda.matmul.allow_tf32
    try:
        with snakemake_job(_fake_snakemake(tmp_path, "evaluate_model_shard", 1, "cuda")) as job:
            assert job.device.type == "cuda"
            assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        with snakemake_job(_fake_snakemake(tmp_path, "finetune", 1, "cuda")):
            assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    finally:
        for key, value in saved.items():
            setattr(torch.backends.cudnn, key, value)
        torch.backends.cuda.matmul.allow_tf32 = saved_matmul
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    assert all(f"rule {name}:" in rules for name in TRAINING_RULES)


# ----------------------------------------------------------------------------- 4: each image read once


N, BATCH, EPOCHS = 22, 8, 2  # batches of 8, 8, 6: shards of 4/4, 4/4, 3/3


def _file_split(folder: Path) -> FileSplit:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(N):
        path = folder / f"{i:03d}.png"
        write_png(path, (rng.random((40, 36, 3)) * 255).astype(np.uint8))
        paths.append(path)
    return FileSplit(paths, torch.arange(N) % 10, "imagenet", "train", resolution=32, resize=36)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 10)
    )


def _train_counting(data, dist=None) -> tuple[dict, list[str]]:
    """Train 2 epochs with the standard (resized-crop) augmentation, counting every image decoded."""
    from robustsoup.data import sources

    decoded, decode = [], sources.decode_image

    def counted(path, *args, **kwargs):
        decoded.append(Path(path).name)
        return decode(path, *args, **kwargs)

    sources.decode_image = counted
    try:
        model = _cnn()
        settings = TrainSettings(epochs=EPOCHS, lr=0.1, batch_size=BATCH, seed=2, augmentation="standard")
        train_model(model, data, CleanInputs(), settings, torch.device("cpu"), distributed=dist)
    finally:
        sources.decode_image = decode
    return {k: v.clone() for k, v in model.state_dict().items()}, decoded


def _counting_rank(folder: str, split: FileSplit) -> None:
    torch.set_num_threads(1)
    group = distributed.current()
    weights, decoded = _train_counting(split, group)
    torch.save({"weights": weights, "decoded": decoded}, Path(folder) / f"rank{group.rank}.pt")


def test_two_ranks_decode_each_image_once_an_epoch_and_train_one_process_weights(tmp_path):
    torch.set_num_threads(1)
    split = _file_split(tmp_path / "images")
    one, decoded_one = _train_counting(split)
    assert sorted(decoded_one) == sorted([f"{i:03d}.png" for i in range(N)] * EPOCHS)
    distributed.spawn(_counting_rank, 2, str(tmp_path), _file_split(tmp_path / "images"))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    decoded = ranks[0]["decoded"] + ranks[1]["decoded"]
    # Each image once per epoch between the two ranks (each rank reads its shards only).
    assert sorted(decoded) == sorted(decoded_one)
    assert len(ranks[0]["decoded"]) == len(ranks[1]["decoded"]) == N * EPOCHS // 2  # shards 4/4, 4/4, 3/3
    # The crops of the global batch, cut per shard: the one process's weights (the existing tolerance).
    _close(ranks[0]["weights"], one, atol=1e-6)


def test_a_rank_gets_its_share_of_the_jobs_cpus_for_its_loader(monkeypatch):
    """Under SLURM a rank is a task of a new step, which loses SLURM_CPUS_PER_GPU: the launcher passes
    each rank its share, and the rank's loader counts it (here the call of a spawned rank, run in-process)."""
    captured = {}
    monkeypatch.setattr(distributed, "spawn", lambda call, n, **kw: captured.update(call=call))
    monkeypatch.setenv("SLURM_CPUS_PER_GPU", "8")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv(loading.RANK_CPUS_ENV, raising=False)
    threads, handlers = torch.get_num_threads(), list(logging.getLogger().handlers)
    distributed.run_as_ranks(print, 2, device=torch.device("cpu"))
    monkeypatch.delenv("SLURM_CPUS_PER_GPU")  # what srun_environment drops
    monkeypatch.setenv("RANK", "0")
    seen = []
    call = dataclasses.replace(captured["call"], fn=lambda: seen.append(loading.job_cpus()), payload=pickle.dumps(()))
    try:
        call()  # what the rank runs
    finally:
        torch.set_num_threads(threads)
        logging.getLogger().handlers = handlers
    assert seen == [8]
    monkeypatch.setenv(loading.RANK_CPUS_ENV, "3")
    assert loading.loader_workers("auto", "cuda") == 2


def _shared_rank(folder: str) -> None:
    from robustsoup.train.shared import shared_rows

    group = distributed.current()
    computed = []

    def compute(idx):
        computed.extend(idx.tolist())
        return idx.float().view(-1, 1) * torch.tensor([[1.0, -2.0, 0.5]])

    table = shared_rows(compute, 11, Path(folder) / "logits", group)
    torch.save({"computed": computed, "rows": table[torch.tensor([10, 0, 5, 6])], "n": len(table)},
               Path(folder) / f"shared{group.rank}.pt")  # fmt: skip


def test_the_distillation_targets_are_computed_once_over_the_ranks_and_shared(tmp_path):
    distributed.spawn(_shared_rank, 2, str(tmp_path))
    ranks = [torch.load(tmp_path / f"shared{r}.pt", weights_only=False) for r in range(2)]
    assert sorted(ranks[0]["computed"] + ranks[1]["computed"]) == list(range(11))
    expected = torch.tensor([10.0, 0.0, 5.0, 6.0]).view(-1, 1) * torch.tensor([[1.0, -2.0, 0.5]])
    for rank in ranks:
        assert rank["n"] == 11 and torch.equal(rank["rows"], expected)
    assert not list(tmp_path.glob("logits*.npy"))  # removed once mapped


# ----------------------------------------------------------------------------- 5: fp16


def _confident_model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10)).eval()
    with torch.no_grad():
        model[1].weight.mul_(100)  # most losses below fp16's smallest gradient
    return model


@pytest.mark.parametrize("attack", ["apgd", "pgd"])
def test_fp16_training_attacks_move_confident_images_as_float32_does(attack):
    from robustsoup.attacks import pgd_attack
    from robustsoup.attacks.apgd import apgd_train
    from robustsoup.attacks.gradients import input_gradient

    model = _confident_model()
    x = torch.rand(32, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)

    def moved(fp16: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.float16, enabled=fp16):
            if attack == "apgd":
                x_adv = apgd_train(model, x, y, "Linf", 8 / 255, n_iter=4)[0]
            else:
                x_adv = pgd_attack(model, x, y, "Linf", 8 / 255, 4, random_start=False)
        return (x_adv - x).flatten(1).abs().amax(1) > 0

    assert moved(False).float().mean() > 0.5
    assert torch.equal(moved(True), moved(False))
    x_grad = x.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(x_grad)
        loss = nn.functional.cross_entropy(logits.float(), y, reduction="none")
        grad = input_gradient(loss, logits, y, x_grad)
    assert grad.flatten(1).abs().amax(1).gt(0).float().mean() > 0.5


class _Overflow(CleanInputs):
    """Clean inputs, but the second batch scaled past fp16's range in the forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __call__(self, model, x, y):
        self.calls += 1
        return x * 1e6 if self.calls == 2 else x


def test_an_fp16_forward_overflow_is_skipped_by_the_scaler_whose_state_resumes(tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = ImageSplit(
        (torch.rand(12, 3, 4, 4, generator=generator) * 255).to(torch.uint8),
        torch.randint(0, 10, (12,), generator=generator),
        "synthetic",
        "train",
    )
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
    settings = TrainSettings(epochs=1, lr=0.1, batch_size=4, seed=0)
    step = SupervisedStep(model, _Overflow(), Arithmetic("fp16"), torch.device("cpu"), settings=settings)
    history = run_epochs(step, data, settings, resume_path=tmp_path / "r.pt", fingerprint="f")
    assert history[0]["skipped_steps"] == 1 and history[0]["loss_scale"] == 2.0**15
    state = torch.load(tmp_path / "r.pt", weights_only=True)
    assert state["scaler"]["scale"] == 2.0**15
    scaler = torch.amp.GradScaler("cpu")
    restored = EpochState(tmp_path / "r.pt", "f", model, torch.optim.SGD(model.parameters(), lr=0.1),
                          torch.Generator(), CleanInputs(), scaler=scaler)  # fmt: skip
    restored.restore(settings.epochs)
    assert scaler.get_scale() == 2.0**15
    # In float32 the same batch is finite; a loss that stays non-finite is still divergence.
    with pytest.raises(TrainingDivergedError):
        bad = SupervisedStep(model, CleanInputs(), Arithmetic("float32"), torch.device("cpu"), settings=settings)
        with torch.no_grad():
            model[1].weight.fill_(float("nan"))
        run_epochs(bad, data, settings)


# ----------------------------------------------------------------------------- 6: leases on shared machines


def test_leases_respect_cuda_visible_devices_and_open_to_every_user(fake_gpus, monkeypatch):
    assert visible_gpu_ids() == ["0", "1", "2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpu_ids() == ["2", "3"]
    old = os.umask(0o022)
    try:
        with gpu_lease(lease_dir=fake_gpus / "sub", timeout=1) as leased:
            assert leased == "2" and os.environ["CUDA_VISIBLE_DEVICES"] == "2"
    finally:
        os.umask(old)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "2,3"
    for folder in (fake_gpus, fake_gpus / "sub"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o1777
    assert stat.S_IMODE((fake_gpus / "sub" / "gpu2.lock").stat().st_mode) == 0o666
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpu_ids() == []


# ----------------------------------------------------------------------------- 7: bench/gpu.py and make gpu-check


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_gpu_sets_the_pipelines_cuda_settings(monkeypatch, tmp_path):
    """Call order only (no GPU here): main() calls configure_cuda as a training job does (TF32 on, the
    config's default) before measuring, --no-tf32 asks for strict float32, and the JSON records them."""
    gpu = _script("gpu")
    calls = []
    monkeypatch.setattr(gpu, "configure_cuda", lambda tf32=True: calls.append(tf32) or {"tf32": tf32})
    monkeypatch.setattr(gpu, "sizes", lambda device, quick: [])
    gpu.main(["--device", "cpu", "--json", str(tmp_path / "a.json")])
    gpu.main(["--device", "cpu", "--no-tf32", "--json", str(tmp_path / "b.json")])
    assert calls == [True, False]
    assert json.loads((tmp_path / "b.json").read_text())["cuda"] == {"tf32": False}


def test_gpu_check_smoke_mode_prints_one_table_of_passing_checks():
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--smoke"],
        capture_output=True,
        text=True,
        timeout=400,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    table = done.stdout.splitlines()
    assert table[1].startswith("check") and "FAIL" not in done.stdout
    for name in ("bench/gpu.py", "2-rank training", "GPU lease round trip", "fp16 APGD", "sharded vs unsharded"):
        assert any(line.startswith(name) for line in table), name
