"""The distillation stages end to end on a tiny generated setup give the weights they gave before the
distillation trained through the one runner (``train.run.train_and_checkpoint``) and the models were built by the
one factory. The fingerprints below were computed with the code before that change (commit eba6932). They are
not digests: float32 kernels differ in their last bits between CPUs (an AVX2-limited run of the same code gives
other SHA-256s and fingerprints equal to 1e-8), while any change to what the training does moves them by far
more than the tolerance. The fine-tuned student, trained on AugMix and corruptions, carries the round-off
further: on an Intel AVX-512 CPU (and on it limited to AVX2) its fingerprint is 1.3e-5 off the AMD CPU's that
made the goldens (the others ≤ 2e-7), where a learning rate 1 % higher moves it by 5.6e-5 (the teacher's
by 3.7e-5): its tolerance is 3e-5."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from robustsoup.checkpoint import load_checkpoint
from robustsoup.distill.stages import distill_student, finetune_student, train_student, train_teacher
from robustsoup.run_config import resolve_config

N = 32
# (Σᵢ (i+1)·mean(tensorᵢ), ‖all tensors‖₂) over each checkpoint's float tensors in sorted key order, computed
# with the code of commit eba6932 (one CPU thread, float32, AVX512); the SHA-256s that code wrote on that CPU were
# 762008a1…, 8d326da7…, 7a147f5e… and 3d198605….
GOLDEN = {
    "teacher": (197.45780189316656, 10.509363754042909),
    "student": (198.73271265580422, 14.741922347273258),
    "student-multihead": (182.20938228097282, 14.506179663299196),
    "student-finetuned": (173.4358297787869, 14.09199256370558),
}
RELATIVE = {"student-finetuned": 3e-5}  # the others: 1e-6 (see above)


def fingerprint(state: dict) -> tuple[float, float]:
    keys = sorted(k for k, v in state.items() if v.is_floating_point())
    weighted = sum((i + 1) * state[k].double().sum().item() / state[k].numel() for i, k in enumerate(keys))
    return weighted, sum(state[k].double().pow(2).sum().item() for k in keys) ** 0.5


def _config() -> dict:
    training = {"epochs": 2, "lr": 0.05, "batch_size": 8, "schedule": "cosine", "precision": "float32"}
    shift = {"kind": "augmix+corruptions", "corruptions": ["saturate", "gaussian_blur"], "severities": [2, 4]}
    return resolve_config(
        {
            "seed": 3,
            "distill": {
                "teacher": {"width": 4, "training": training},
                "student": {"width": 8, "training": training},
                "augmentation": shift,
                "multihead": {"dropout": 0.25, "trainable_blocks": 1},
                "distillation": {"epochs": 2, "lr": 0.02, "batch_size": 8, "precision": "float32"},
                "finetune": training,
            },
        }
    )


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("golden")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8, generator=generator)
    train = tmp / "train.safetensors"
    save_file({"images": images, "labels": torch.arange(N) % 10}, str(train), {"dataset": "digits", "split": "train"})
    config, cpu = _config(), torch.device("cpu")
    paths = {name: tmp / f"{name}.safetensors" for name in GOLDEN}
    train_teacher(config, train, paths["teacher"], cpu)
    train_student(config, train, paths["student"], cpu)
    distill_student(config, paths["teacher"], paths["student"], train, paths["student-multihead"], cpu)
    finetune_student(config, paths["student"], train, paths["student-finetuned"], cpu)
    torch.set_num_threads(threads)
    return {name: load_checkpoint(path) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_each_stage_writes_the_weights_it_wrote_before_the_one_runner(outputs, name):
    state, _meta = outputs[name]
    assert fingerprint(state) == pytest.approx(GOLDEN[name], rel=RELATIVE.get(name, 1e-6))


def test_the_multihead_students_sidecar_counts_its_trainable_parameters(outputs):
    _state, meta = outputs["student-multihead"]
    assert 0 < meta.metrics["trainable_parameters"] < meta.metrics["parameters"]
    assert meta.metrics["trainable"] and all(n.startswith("net.") for n in meta.metrics["trainable"])
    assert len(meta.metrics["train_history"]) == 2
    assert meta.training["precision"] == "float32" and meta.training["precision_requested"] == "float32"
    assert meta.parent == "student" and meta.architecture == "multihead"
