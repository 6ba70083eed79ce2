import pytest
import torch

from robustsoup.data import ImageSplit
from robustsoup.train.loop import BestEpoch, TrainingDivergedError, TrainSettings, learning_rate, train_model
from robustsoup.train.policies import AdversarialInputs, make_input_policy

from conftest import tiny_meta

EPS = {"Linf": 0.1, "L2": 1.0, "L1": 8.0}


def _reference_piecewise_ft(t: float, epochs: int, lr_max: float) -> float:
    """robust-finetuning's utils.get_lr_schedule('piecewise-ft') at t epochs (train.py: t = epoch + (i + 1) / n)."""
    if t / epochs < 1.0 / 3.0:
        return lr_max
    return lr_max / 10.0 if t / epochs < 2.0 / 3.0 else lr_max / 100.0


def test_piecewise_ft_divides_by_ten_each_third_read_after_the_step():
    # 3 epochs of 3 iterations: the rate is read at (i + 1) / 9, so the third iteration already gets lr/10.
    rates = [learning_rate("piecewise-ft", 0.3, i, 9, per_epoch=3) for i in range(9)]
    assert rates == pytest.approx([0.3] * 2 + [0.03] * 3 + [0.003] * 4)
    assert rates == [learning_rate("piecewise-ft", 0.3, i, 9) for i in range(9)]
    for epochs in range(1, 8):
        for per_epoch in range(1, 40):
            ours = [
                learning_rate("piecewise-ft", 0.05, i, epochs * per_epoch, per_epoch) for i in range(epochs * per_epoch)
            ]
            reference = [
                _reference_piecewise_ft(e + (i + 1) / per_epoch, epochs, 0.05)
                for e in range(epochs)
                for i in range(per_epoch)
            ]
            assert ours == reference, (epochs, per_epoch)
    assert learning_rate("cosine", 1.0, 0, 10) == 1.0 and learning_rate("cosine", 1.0, 5, 10) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown schedule"):
        learning_rate("step", 1.0, 0, 1)


def _data(n=48):
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, 32, 32, generator=generator) * 255).to(torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return ImageSplit(images, labels, "synthetic", "train")


def _train(norm, epochs=2, attack="apgd", decay_all=True, exempt_lr="schedule", **kwargs):
    torch.manual_seed(0)
    model = tiny_meta().build()
    policy = make_input_policy(norm, EPS, 2, attack=attack, seed=0)
    settings = TrainSettings(epochs=epochs, lr=0.1, batch_size=16, decay_all=decay_all, exempt_lr=exempt_lr)
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


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a dict"])
def test_a_corrupt_resume_state_is_ignored_with_a_warning_and_training_starts_afresh(tmp_path, caplog, damage):
    """A state cut short by a crash mid-write (or overwritten) must not stop the job: it is ignored,
    named in a warning, and the run starts from epoch 1 to the uninterrupted run's weights."""
    uninterrupted, _, _ = _train("Linf", epochs=2)
    state = tmp_path / "m.resume.pt"
    with pytest.raises(Killed):
        _train("Linf", epochs=2, resume_path=state, fingerprint="a", on_epoch_end=_kill_after(1))
    good = state.read_bytes()
    if damage == "truncated":
        state.write_bytes(good[: len(good) // 2])
    elif damage == "garbage":
        state.write_bytes(b"\x00not a torch file" * 10)
    else:
        torch.save(["a", "list"], state)
    with caplog.at_level("WARNING", logger="robustsoup"):
        resumed, history, _ = _train("Linf", epochs=2, resume_path=state, fingerprint="a")
    assert str(state) in caplog.text and "starting from the first epoch" in caplog.text
    assert [r["epoch"] for r in history] == [1, 2]
    for key, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[key]), key


def _scripted_best(scores, first_epoch=1):
    """A BestEpoch whose score after epoch e is scores[e - 1] (a run resumed after epoch k: first_epoch k + 1)."""
    epochs = iter(range(first_epoch - 1, len(scores)))
    return BestEpoch(score=lambda model: scores[next(epochs)], name="scripted")


def _weights_after_each_epoch(snapshots, model_ref):
    def hook(epoch):
        snapshots[epoch] = {k: v.clone() for k, v in model_ref[0].state_dict().items()}

    return hook


def test_best_epoch_keeps_the_weights_of_the_highest_score(tmp_path):
    scores = [0.2, 0.9, 0.5]
    snapshots, holder = {}, []
    torch.manual_seed(0)
    model = tiny_meta().build()
    holder.append(model)
    best = _scripted_best(scores)
    settings = TrainSettings(epochs=3, lr=0.1, batch_size=16)
    policy = make_input_policy("none", EPS, 2, seed=0)
    history = train_model(
        model,
        _data(),
        policy,
        settings,
        torch.device("cpu"),
        on_epoch_end=_weights_after_each_epoch(snapshots, holder),
        best=best,
    )
    assert [r["selection_score"] for r in history] == scores
    assert best.record() == {"selection": "scripted", "selected_epoch": 2, "selection_score": 0.9}
    for key, tensor in model.state_dict().items():
        assert torch.equal(tensor, snapshots[2][key]), key
    assert not torch.equal(snapshots[2]["net.conv1.weight"], snapshots[3]["net.conv1.weight"])
    # Without a selection the run ends at the last epoch (the default).
    last, _, _ = _train("none", epochs=3)
    assert torch.equal(last.state_dict()["net.conv1.weight"], snapshots[3]["net.conv1.weight"])


def test_a_killed_run_resumes_to_the_same_best_epoch(tmp_path):
    scores = [0.1, 0.8, 0.3]
    uninterrupted, _, _ = _train("none", epochs=3, best=_scripted_best(scores))
    state = tmp_path / "m.resume.pt"
    with pytest.raises(Killed):
        _train(
            "none",
            epochs=3,
            resume_path=state,
            fingerprint="a",
            on_epoch_end=_kill_after(2),
            best=_scripted_best(scores),
        )
    best = _scripted_best(scores, first_epoch=3)
    resumed, history, _ = _train("none", epochs=3, resume_path=state, fingerprint="a", best=best)
    assert best.epoch == 2 and [r["epoch"] for r in history] == [1, 2, 3]
    for key, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[key]), key


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
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = TrainSettings(epochs=1, lr=0.1, batch_size=16, precision="bf16", channels_last=True)
    record = {}
    assert settings.resolved(torch.device("cpu"), record, model).precision == "bf16"
    assert record["precision"] == "bf16" and record["memory_format"] == "channels_last"
    seen = []  # the stem's input layout and output dtype in every training forward pass (train mode)

    def stem(module, inputs, output):
        if module.training:
            seen.append((inputs[0].is_contiguous(memory_format=torch.channels_last), output.dtype))

    hook = model.net.conv1.register_forward_hook(stem)
    history = train_model(model, _data(), make_input_policy("Linf", EPS, 2), settings, torch.device("cpu"))
    hook.remove()
    assert len(seen) == 3 and set(seen) == {(True, torch.bfloat16)}  # 48 images in batches of 16, all in bf16
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
    assert model.net.conv1.weight.is_contiguous()
    changed = [k for k, v in model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    assert "net.conv1.weight" in changed and "net.linear.weight" in changed and len(history) == 1


def test_corruption_augmentation_is_seeded_and_keeps_a_clean_fraction():
    from robustsoup.train.policies import CorruptionInputs

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


def test_corruption_augmentation_equals_each_image_corrupted_by_its_own_draw():
    """The batch's groups run together (threads); each image must still be its own draw's corruption,
    byte for byte, at the stream position of the batch (index_offset), the second batch included."""
    from robustsoup.data.corruptions import corrupt
    from robustsoup.train.policies import CorruptionInputs

    x = _data(12).images.float() / 255
    policy = CorruptionInputs(["gaussian_noise", "fog", "contrast"], [2, 5], clean_fraction=0.2, seed=3)
    draws = CorruptionInputs(["gaussian_noise", "fog", "contrast"], [2, 5], clean_fraction=0.2, seed=3).generator
    images = (x * 255).round().to(torch.uint8)
    for batch in range(2):
        out = policy(None, x, None)
        which = torch.randint(3, (12,), generator=draws)
        level = torch.randint(2, (12,), generator=draws)
        clean = torch.rand(12, generator=draws) < 0.2
        expected = images.clone()
        for c, name in enumerate(policy.corruptions):
            for s, severity in enumerate(policy.severities):
                rows = ((which == c) & (level == s) & ~clean).nonzero().flatten()
                if len(rows):
                    expected[rows] = corrupt(images[rows], name, severity, seed=3, index_offset=batch * 12)
        assert torch.equal((out * 255).round().to(torch.uint8), expected), batch


def test_exempt_parameters_follow_the_schedule_or_keep_a_fixed_rate():
    from robustsoup.train.loop import _parameter_groups, set_learning_rate

    model = tiny_meta().build()
    scheduled = torch.optim.SGD(_parameter_groups(model, TrainSettings(epochs=1, lr=0.1, decay_all=False)), lr=0.1)
    set_learning_rate(scheduled, 0.01)
    assert [g["lr"] for g in scheduled.param_groups] == [0.01, 0.01]
    assert [g["weight_decay"] for g in scheduled.param_groups] == [5e-4, 0.0]
    assert all(p.dim() <= 1 for p in scheduled.param_groups[1]["params"])
    # robust-finetuning's from-scratch train.py: the exempt group keeps the initial lr 1.0 throughout.
    settings = TrainSettings(epochs=1, lr=0.1, decay_all=False, exempt_lr=1.0)
    fixed = torch.optim.SGD(_parameter_groups(model, settings), lr=0.1)
    set_learning_rate(fixed, 0.01)
    assert [g["lr"] for g in fixed.param_groups] == [0.01, 1.0]
    # Fine-tuning: one group, every parameter decays and follows the schedule whatever exempt_lr says.
    finetune = torch.optim.SGD(_parameter_groups(model, TrainSettings(epochs=1, lr=0.1, exempt_lr=1.0)), lr=0.1)
    set_learning_rate(finetune, 0.01)
    assert [g["lr"] for g in finetune.param_groups] == [0.01]
    with pytest.raises(ValueError, match="exempt_lr must be 'schedule' or a positive number"):
        TrainSettings(epochs=1, lr=0.1, exempt_lr="fixed")


def test_a_fixed_exempt_rate_trains_and_resumes(tmp_path):
    kwargs = {"decay_all": False, "exempt_lr": 0.5}
    uninterrupted, _, _ = _train("none", epochs=2, **kwargs)
    state = tmp_path / "m.resume.pt"
    with pytest.raises(Killed):
        _train("none", epochs=2, resume_path=state, fingerprint="a", on_epoch_end=_kill_after(1), **kwargs)
    resumed, _, _ = _train("none", epochs=2, resume_path=state, fingerprint="a", **kwargs)
    for key, tensor in uninterrupted.state_dict().items():
        assert torch.equal(tensor, resumed.state_dict()[key]), key
    scheduled, _, _ = _train("none", epochs=2, decay_all=False)
    assert not torch.equal(scheduled.state_dict()["net.bn.weight"], uninterrupted.state_dict()["net.bn.weight"])
