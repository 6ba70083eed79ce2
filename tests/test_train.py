import pytest
import torch

from robustsoup.data import ImageSplit
from robustsoup.train.loop import (
    AdversarialInputs,
    TrainingDivergedError,
    TrainSettings,
    learning_rate,
    make_input_policy,
    train_model,
)

from conftest import tiny_meta

EPS = {"Linf": 0.1, "L2": 1.0, "L1": 8.0}


def test_piecewise_ft_divides_by_ten_each_third():
    rates = [learning_rate("piecewise-ft", 0.3, i, 9) for i in range(9)]
    assert rates == pytest.approx([0.3] * 3 + [0.03] * 3 + [0.003] * 3)
    assert learning_rate("cosine", 1.0, 0, 10) == 1.0 and learning_rate("cosine", 1.0, 5, 10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate("step", 1.0, 0, 1)


def _data(n=48):
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, 32, 32, generator=generator) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return ImageSplit(images, labels, "synthetic", "train")


def _train(norm, epochs=2, attack="apgd", **kwargs):
    torch.manual_seed(0)
    model = tiny_meta().build()
    policy = make_input_policy(norm, EPS, 2, attack=attack, seed=0)
    settings = TrainSettings(epochs=epochs, lr=0.1, batch_size=16)
    history = train_model(model, _data(), policy, settings, torch.device("cpu"), **kwargs)
    return model, history, policy


@pytest.mark.parametrize("norm, attack", [("none", "apgd"), ("Linf", "apgd"), ("L1", "apgd"), ("L2", "pgd")])
def test_training_is_deterministic_under_a_seed(norm, attack):
    first, history, _ = _train(norm, attack=attack)
    second, _, _ = _train(norm, attack=attack)
    assert len(history) == 2 and history[-1]["lr"] > 0
    for key, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[key]), key
    torch.manual_seed(0)
    assert not torch.equal(first.state_dict()["net.conv1.weight"], tiny_meta().build().state_dict()["net.conv1.weight"])


class Killed(Exception):
    pass


def _kill_after(epoch_to_die):
    def hook(epoch):
        if epoch == epoch_to_die:
            raise Killed

    return hook


@pytest.mark.parametrize("norm", [["Linf", "L1"], "none"])
def test_a_killed_run_resumes_to_the_same_weights(tmp_path, norm):
    uninterrupted, history, _ = _train(norm, epochs=3)
    state = tmp_path / "m.resume.pt"
    with pytest.raises(Killed):
        _train(norm, epochs=3, resume_path=state, fingerprint="a", on_epoch_end=_kill_after(1))
    assert state.exists()
    resumed, resumed_history, _policy = _train(norm, epochs=3, resume_path=state, fingerprint="a")
    for key, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[key]), key
    assert [r["epoch"] for r in resumed_history] == [1, 2, 3]
    assert resumed_history[0]["loss"] == history[0]["loss"]


def test_a_resume_state_of_other_settings_is_ignored(tmp_path):
    state = tmp_path / "m.resume.pt"
    with pytest.raises(Killed):
        _train("Linf", epochs=2, resume_path=state, fingerprint="old", on_epoch_end=_kill_after(1))
    _, history, _ = _train("Linf", epochs=2, resume_path=state, fingerprint="new")
    assert [r["epoch"] for r in history] == [1, 2]


def test_multi_norm_training_draws_the_less_robust_norm_more_often():
    policy = AdversarialInputs(["Linf", "L1"], [0.1, 8.0], steps=1, seed=0)
    policy.robust[:] = torch.tensor([90.0, 10.0])
    policy.seen[:] = torch.tensor([100.0, 100.0])
    draws = torch.tensor([policy._draw_norm() for _ in range(400)])
    assert 0.8 < (draws == 1).float().mean() < 0.98  # ∝ 1 − accuracy: 0.9 / (0.9 + 0.1)


def test_bad_training_input_is_refused():
    with pytest.raises(ValueError, match="unknown norm 'L3'"):
        AdversarialInputs(["L3"], [0.1], steps=1)
    with pytest.raises(ValueError, match="ε for Linf must be positive"):
        AdversarialInputs(["Linf"], [0.0], steps=1)
    with pytest.raises(ValueError, match=r"no ε configured for \['L2'\]"):
        make_input_policy("L2", {"Linf": 0.1}, 1)


def test_a_diverging_loss_stops_training_with_a_message():
    torch.manual_seed(0)
    model = tiny_meta().build()
    settings = TrainSettings(epochs=1, lr=1e30, batch_size=16, momentum=0.0)
    with pytest.raises(TrainingDivergedError, match="loss became (nan|inf).*No checkpoint"):
        train_model(model, _data(), make_input_policy("none", EPS, 1), settings, torch.device("cpu"))


def test_bf16_and_channels_last_train_and_return_a_float32_model():
    torch.manual_seed(0)
    model = tiny_meta().build()
    settings = TrainSettings(epochs=1, lr=0.1, batch_size=16, precision="bf16", channels_last=True)
    train_model(model, _data(), make_input_policy("Linf", EPS, 2), settings, torch.device("cpu"))
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    assert model.net.conv1.weight.is_contiguous()


def test_corruption_augmentation_is_seeded_and_keeps_a_clean_fraction():
    from robustsoup.train.loop import CorruptionInputs

    x = _data(16).images.float() / 255
    first = CorruptionInputs(["gaussian_noise", "fog"], [3, 5], clean_fraction=0.25, seed=1)
    again = CorruptionInputs(["gaussian_noise", "fog"], [3, 5], clean_fraction=0.25, seed=1)
    out = first(None, x, None)
    assert torch.equal(out, again(None, x, None))
    changed = (out - x).flatten(1).abs().amax(1) > 1 / 255
    assert 0 < int(changed.sum()) < 16 and out.min() >= 0 and out.max() <= 1
    with pytest.raises(ValueError, match="unknown corruptions"):
        CorruptionInputs(["rain"], [1])
    with pytest.raises(ValueError, match="severities must be among"):
        CorruptionInputs(["fog"], [6])
