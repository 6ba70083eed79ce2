"""The distillation stages end to end on a tiny generated setup give the weights they gave before the
distillation trained through the one runner (``train.run.train_and_checkpoint``) and the models were built by the
one factory: the tensors' digests below were computed with the code before that change (commit eba6932)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from robustsoup.checkpoint import load_checkpoint
from robustsoup.config import resolve_config
from robustsoup.distill.stages import distill_student, finetune_student, train_student, train_teacher

N = 32
# tensors_sha256 of each stage's checkpoint before the change (one CPU thread, float32).
GOLDEN = {
    "teacher": "762008a1027786de23586d7b33f0f77ce133b3da5c9564334588040cb4ae19ac",
    "student": "8d326da7482378d0447810ed34a0ef4dfdf96c0277ff31ca2433dfc8ed711ff4",
    "student-multihead": "7a147f5e49ccffd1f87cebeb0d753aa71a24999af442f3456d5158180c9e786c",
    "student-finetuned": "3d1986053c83cf7b5a8e67c265e441481f3f7c7aa43dfdd38e1600c6aad2d25a",
}


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
    return {name: load_checkpoint(path) for name, path in paths.items()}


@pytest.mark.parametrize("name", list(GOLDEN))
def test_each_stage_writes_the_weights_it_wrote_before_the_one_runner(outputs, name):
    _state, meta = outputs[name]
    assert meta.weights_sha256 == GOLDEN[name]


def test_the_multihead_students_sidecar_counts_its_trainable_parameters(outputs):
    _state, meta = outputs["student-multihead"]
    assert 0 < meta.metrics["trainable_parameters"] < meta.metrics["parameters"]
    assert meta.metrics["trainable"] and all(n.startswith("net.") for n in meta.metrics["trainable"])
    assert len(meta.metrics["train_history"]) == 2
    assert meta.training["precision"] == "float32" and meta.training["precision_requested"] == "float32"
    assert meta.parent == "student" and meta.architecture == "multihead"
