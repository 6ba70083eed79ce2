"""Robust distillation: frozen layers stay put, head selection is seeded and does what each rule says."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from robustsoup.checkpoint import CheckpointMeta, load_model, save_checkpoint
from robustsoup.config import ConfigError
from robustsoup.distill.augmentation import AugmentInputs
from robustsoup.distill.calibration import calibrate_thresholds
from robustsoup.distill.heads import HeadSignals, Thresholds, head_signals, select_heads, selected_predictions
from robustsoup.distill.student import freeze_for_distillation, multihead_state_from_student
from robustsoup.distill.training import DistillSettings, distill_multihead, kd_loss, predict_logits
from robustsoup.models import create_model
from robustsoup.models.multihead import HEADS
from robustsoup.run_config import resolve_config
from robustsoup.train.run import count_parameters

from conftest import tiny_meta


def _student_and_multihead(width: int = 4, dropout: float = 0.25, trainable_blocks: int = 1):
    torch.manual_seed(0)
    student = tiny_meta(width=width).build().eval()
    multihead = create_model(
        "multihead",
        10,
        [0.3] * 3,
        [0.3] * 3,
        base="preact_resnet_small",
        width=width,
        activation="relu",
        dropout=dropout,
        trainable_blocks=trainable_blocks,
    )
    multihead.load_state_dict(multihead_state_from_student(student.state_dict(), multihead.net))
    return student, multihead.eval()


def _tiny_split(n: int = 24):
    from robustsoup.data import ImageSplit

    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    return ImageSplit(images, torch.arange(n) % 10, "digits", "train")


def test_multihead_starts_as_the_student_in_every_head():
    student, multihead = _student_and_multihead()
    x = torch.rand(5, 3, 32, 32)
    signals = head_signals(multihead, x, samples=2)
    for h in range(len(HEADS)):
        torch.testing.assert_close(signals.logits[h], student(x), rtol=0, atol=1e-5)
    torch.testing.assert_close(multihead(x), student(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("precision", ["float32", "bf16"])
def test_frozen_parameters_stay_bit_identical_after_distillation(precision):
    student, multihead = _student_and_multihead()
    teacher = tiny_meta(width=4).build().eval()
    before = copy.deepcopy(multihead.state_dict())
    data = _tiny_split()
    policy = AugmentInputs("augmix+corruptions", ["gaussian_blur", "saturate"], [2, 4], clean_fraction=0.5, seed=0)
    settings = DistillSettings(epochs=2, lr=0.05, batch_size=8, batchnorm="train", precision=precision)
    distill_multihead(
        multihead, teacher, predict_logits(student, data, "cpu"), data, policy, settings, torch.device("cpu")
    )
    tuned = set(multihead.net.trainable_names())
    assert tuned and not any(n.startswith("base.layers.0.") or n.startswith("base.conv1") for n in tuned)
    changed = []
    for key, tensor in multihead.state_dict().items():
        name = key.removeprefix("net.")
        frozen = not any(name.startswith(m + ".") for m in multihead.net.trainable_modules)
        if frozen:
            assert torch.equal(tensor, before[key]), f"frozen tensor {key} changed"
        elif not torch.equal(tensor, before[key]):
            changed.append(name)
    assert any(c.startswith("heads.") for c in changed) and any(c.startswith("base.layers.2.") for c in changed)


def test_only_heads_and_final_norm_are_tuned_with_zero_blocks():
    _, multihead = _student_and_multihead(trainable_blocks=0)
    names = freeze_for_distillation(multihead)
    assert {n.split(".")[1] for n in names} == {"base", "heads"}
    assert all(n.startswith(("net.base.bn.", "net.heads.")) for n in names)
    assert count_parameters(multihead, trainable_only=True) == sum(
        p.numel() for n, p in multihead.named_parameters() if n in names
    )


def test_distillation_resumes_to_the_same_weights(tmp_path):
    student, first = _student_and_multihead()
    _, second = _student_and_multihead()
    teacher = tiny_meta(width=4).build().eval()
    data = _tiny_split(16)
    reference = predict_logits(student, data, "cpu")

    def policy():
        return AugmentInputs("corruptions", ["gaussian_blur"], [3], clean_fraction=0.5, seed=0)

    settings = DistillSettings(epochs=2, lr=0.05, batch_size=8)
    torch.manual_seed(0)
    distill_multihead(first, teacher, reference, data, policy(), settings, torch.device("cpu"))

    class Killed(Exception):
        pass

    def kill(epoch):
        if epoch == 1:
            raise Killed

    state = tmp_path / "m.resume.pt"
    torch.manual_seed(0)
    with pytest.raises(Killed):
        distill_multihead(
            second,
            teacher,
            reference,
            data,
            policy(),
            settings,
            torch.device("cpu"),
            resume_path=state,
            fingerprint="f",
            on_epoch_end=kill,
        )
    _, third = _student_and_multihead()
    distill_multihead(
        third, teacher, reference, data, policy(), settings, torch.device("cpu"), resume_path=state, fingerprint="f"
    )
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, third.state_dict()[key]), key


def test_kd_loss_is_zero_for_equal_logits_and_scaled_by_temperature_squared():
    logits = torch.randn(4, 10)
    assert kd_loss(logits, logits, 4.0).abs() < 1e-6
    other = torch.randn(4, 10)
    p, q = (other / 2).softmax(1), (logits / 2).softmax(1)
    expected = (p * (p.log() - q.log())).sum(1).mean() * 4
    torch.testing.assert_close(kd_loss(logits, other, 2.0), expected)


def test_head_selection_with_t_samples_is_deterministic_under_a_seed():
    _, multihead = _student_and_multihead(dropout=0.5)
    with torch.no_grad():  # make the heads differ
        for i, head in enumerate(HEADS):
            multihead.net.heads[head].weight.add_(0.3 * i * torch.randn_like(multihead.net.heads[head].weight))
    x = torch.rand(12, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    first = head_signals(multihead, x, samples=6, seed=7, batch_size=5)
    again = head_signals(multihead, x, samples=6, seed=7, batch_size=5)
    other = head_signals(multihead, x, samples=6, seed=8, batch_size=5)
    assert torch.equal(first.uncertainty, again.uncertainty) and torch.equal(first.divergence, again.divergence)
    assert not torch.equal(first.uncertainty, other.uncertainty)  # the masks really are random
    assert torch.equal(first.logits, other.logits)  # the heads' own predictions use no dropout
    thresholds = Thresholds(float(first.uncertainty[0].median()), float(first.divergence.median()))
    assert torch.equal(select_heads(first, "ours", thresholds), select_heads(again, "ours", thresholds))
    with pytest.raises(ValueError, match="at least one sample"):
        head_signals(multihead, x, samples=0)


def _signals() -> tuple[HeadSignals, torch.Tensor]:
    # 4 inputs, 3 classes. Per head the predicted class:    input 0  1  2  3
    predicted = torch.tensor(
        [
            [0, 1, 2, 0],  # clean
            [0, 2, 2, 1],  # robust
            [1, 1, 0, 2],
        ]
    )  # combined
    logits = torch.nn.functional.one_hot(predicted, 3).float() * 5
    uncertainty = torch.tensor([[0.1, 0.9, 0.2, 0.8], [0.5, 0.2, 0.6, 0.3], [0.4, 0.3, 0.1, 0.9]])
    divergence = torch.tensor([0.01, 2.0, 0.5, 0.02])
    labels = torch.tensor([0, 2, 2, 2])
    return HeadSignals(logits, uncertainty, divergence), labels


def test_each_rule_picks_what_it_says():
    signals, labels = _signals()
    for i, head in enumerate(HEADS):
        assert select_heads(signals, head).tolist() == [i] * 4
    # oracle: the first correct head (clean, robust, combined order); clean when none is correct
    assert select_heads(signals, "oracle", labels=labels).tolist() == [0, 1, 0, 2]
    # ours: clean if u_clean ≤ 0.5 and divergence ≤ 0.1, else the less uncertain of robust / combined
    ours = select_heads(signals, "ours", Thresholds(0.5, 0.1))
    assert ours.tolist() == [0, 1, 2, 1]
    assert selected_predictions(signals, ours).tolist() == [0, 2, 0, 1]
    # "always" thresholds keep every input on the clean head; "never" on the others
    assert select_heads(signals, "ours", Thresholds(math.inf, math.inf)).tolist() == [0] * 4
    assert 0 not in select_heads(signals, "ours", Thresholds(-1.0, -1.0)).tolist()
    with pytest.raises(ValueError, match="needs the labels"):
        select_heads(signals, "oracle")
    with pytest.raises(ValueError, match="needs thresholds"):
        select_heads(signals, "ours")
    with pytest.raises(ValueError, match="unknown head-selection rule"):
        select_heads(signals, "vote")


def test_calibration_respects_the_clean_floor_and_prefers_larger_thresholds():
    signals, labels = _signals()
    clean = HeadSignals(signals.logits[:, :1], signals.uncertainty[:, :1], signals.divergence[:1])
    shifted = HeadSignals(signals.logits[:, 1:], signals.uncertainty[:, 1:], signals.divergence[1:])
    thresholds, record = calibrate_thresholds(clean, labels[:1], shifted, labels[1:], max_clean_drop=0.0)
    # The clean input (u 0.1, d 0.01) must stay on the clean head; input 1 must leave it (robust is right).
    assert select_heads(clean, "ours", thresholds).tolist() == [0]
    assert record["adapt_clean_accuracy"] == 1.0 and record["adapt_shifted_accuracy"] == pytest.approx(2 / 3)
    fixed, record = calibrate_thresholds(clean, labels[:1], shifted, labels[1:], uncertainty=0.05, divergence=1.0)
    assert fixed == Thresholds(0.05, 1.0) and record["adapt_clean_accuracy"] == 0.0


def test_augmentation_is_seeded_and_records_the_shifted_images():
    x = torch.rand(10, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    first = AugmentInputs("augmix+corruptions", ["gaussian_blur"], [3], clean_fraction=0.3, seed=4)
    again = AugmentInputs("augmix+corruptions", ["gaussian_blur"], [3], clean_fraction=0.3, seed=4)
    out = first(None, x, None)
    assert torch.equal(out, again(None, x, None))
    kept = ~first.last_shifted
    assert torch.allclose(out[kept], (x[kept] * 255).round() / 255)
    state = first.state_dict()
    nxt = first(None, x, None)
    first.load_state_dict(state)
    assert torch.equal(first(None, x, None), nxt)
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentInputs("mixup")


def test_multihead_checkpoint_rebuilds_from_its_sidecar(tmp_path):
    _, multihead = _student_and_multihead()
    meta = CheckpointMeta(
        name="student-multihead",
        architecture="multihead",
        model_kwargs={
            "base": "preact_resnet_small",
            "width": 4,
            "activation": "relu",
            "dropout": 0.25,
            "trainable_blocks": 1,
        },
        dataset="digits",
        num_classes=10,
        mean=[0.3] * 3,
        std=[0.3] * 3,
    )
    path = save_checkpoint(tmp_path / "student-multihead.safetensors", multihead.state_dict(), meta)
    loaded, _ = load_model(path)
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(loaded(x), multihead(x))


def test_bad_distill_config_errors():
    with pytest.raises(ConfigError, match="distill.selection.rule"):
        resolve_config({"distill": {"selection": {"rule": "oracle"}}})
    with pytest.raises(ConfigError, match="distill.augmentation.corruptions"):
        resolve_config({"distill": {"augmentation": {"corruptions": ["rain"]}}})
    with pytest.raises(ConfigError, match="distill.multihead.dropout"):
        resolve_config({"distill": {"multihead": {"dropout": 1.0}}})
    with pytest.raises(ConfigError, match="distill.teacher"):
        resolve_config({"distill": {"teacher": {"depth": 3}}})
    for model in ("teacher", "student"):  # the reader runs distillation's checks (check_distill_config)
        with pytest.raises(ValueError, match=f"distill.{model}.training.epochs.*distill.{model}.weights"):
            resolve_config({"distill": {model: {"training": {"epochs": 0}}}})
    with pytest.raises(ValueError, match="distill.augmentation.corruptions"):
        resolve_config({"distill": {"augmentation": {"kind": "corruptions", "corruptions": []}}})
    with pytest.raises(ValueError, match="trainable_blocks"):
        create_model("multihead", 10, [0.3] * 3, [0.3] * 3, width=4, trainable_blocks=4)
    with pytest.raises(ValueError, match="temperature"):
        DistillSettings(epochs=1, lr=0.1, temperature=0)
    with pytest.raises(ValueError, match="head_weights"):
        DistillSettings(epochs=1, lr=0.1, head_weights={"clean": 1.0})


def test_a_pretrained_teacher_is_kept_as_it_is_with_zero_epochs(tmp_path):
    """distill.teacher.weights: the robust teacher is read from a file (0 epochs: the checkpoint holds its weights)."""
    from safetensors.torch import save_file

    from robustsoup.data import prepare_splits
    from robustsoup.distill.stages import train_teacher

    torch.manual_seed(3)
    pretrained = tiny_meta(width=4).build().state_dict()
    save_file(pretrained, tmp_path / "teacher.safetensors")
    config = resolve_config(
        {
            "distill": {
                "teacher": {"width": 4, "weights": str(tmp_path / "teacher.safetensors"), "training": {"epochs": 0}}
            }
        }
    )
    train = prepare_splits("digits", tmp_path / "data", n_adapt=20, n_test=40, seed=0)["train"]
    train_teacher(config, train, tmp_path / "out.safetensors", torch.device("cpu"))
    model, meta = load_model(tmp_path / "out.safetensors")
    assert meta.training["weights"] == str(tmp_path / "teacher.safetensors")
    for key, tensor in pretrained.items():
        assert torch.equal(model.state_dict()[key], tensor), key
