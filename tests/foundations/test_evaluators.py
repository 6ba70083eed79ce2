"""The one clean batch loop (evaluate.clean) and the evaluators by name (evaluate.registry)."""

import pandas as pd
import pytest
import torch

from robustsoup.attacks import attack_plan
from robustsoup.data import ImageSplit
from robustsoup.evaluate.adversarial import evaluate_threats
from robustsoup.evaluate.clean import batch_correct, clean_correct, evaluate_clean, labelled_batches
from robustsoup.evaluate.mce import ALEXNET_ERRORS, MeanCorruptionError, mce_columns
from robustsoup.evaluate.registry import EVALUATORS, make_evaluator, register_evaluator
from robustsoup.evaluate.rows import METRIC_COLUMNS

from conftest import tiny_meta


def _split(n: int = 23, seed: int = 0, name: str = "test") -> ImageSplit:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return ImageSplit(images, labels, "", name)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return tiny_meta().build().eval()


def _by_hand(model, split: ImageSplit) -> torch.Tensor:
    with torch.no_grad():
        return model(split.images.float() / 255.0).argmax(1) == split.labels


@pytest.mark.parametrize("batch_size", [1, 7, 23, 500])
def test_clean_correct_is_each_images_argmax_whatever_the_batch(batch_size):
    model, split = _model(), _split()
    expected = _by_hand(model, split)
    assert 0 < int(expected.sum()) < len(split)  # a test that can fail: some right, some wrong
    assert torch.equal(clean_correct(model, split, "cpu", batch_size), expected)
    assert torch.equal(clean_correct(model, split, "cpu", batch_size, start=5, stop=16), expected[5:16])


def test_the_loop_reads_every_point_once_in_order_and_leaves_the_models_mode_alone():
    split = _split(10)
    order = torch.cat([idx for idx, _, _, _ in labelled_batches(split, "cpu", 4, start=2)])
    assert order.tolist() == list(range(2, 10))
    model = _model().train()
    clean_correct(model, split, "cpu", 4)
    assert model.training  # its mode is the caller's (a training's epoch-end score runs mid-training)


def test_clean_evaluator_writes_the_row_evaluate_clean_writes_named_as_asked():
    model, split = _model(), _split()
    row, _ = evaluate_clean(model, "m", split, batch_size=5)
    log = make_evaluator("clean", data=split, batch_size=5).run(model, "m", "cpu")
    assert log.rows == row.to_dict("records")
    renamed = make_evaluator("clean", data=split, evalset="held-out", row={"corruption": "fog", "severity": 3})
    (entry,) = renamed.run(model, "m", "cpu").rows
    assert (entry["evalset"], entry["corruption"], entry["severity"]) == ("held-out", "fog", 3)
    assert entry["correct"] == row["correct"].item()


def test_corrupted_evaluator_writes_a_row_per_corruption_and_severity_in_order():
    model = _model()
    copies = {(c, s): _split(seed=10 * i + s) for i, c in enumerate(["fog", "snow"]) for s in (1, 3)}
    evaluator = make_evaluator(
        "corrupted", copies=lambda c, s: copies[(c, s)], corruptions=["fog", "snow"], severities=[3, 1], evalset="test"
    )
    log = evaluator.run(model, "m", "cpu")
    assert [(r["corruption"], r["severity"]) for r in log.rows] == [("fog", 3), ("fog", 1), ("snow", 3), ("snow", 1)]
    for row, points in zip(log.rows, log.points):
        expected = _by_hand(model, copies[(row["corruption"], row["severity"])])
        assert row["correct"] == int(expected.sum()) and row["n"] == 23 and row["evalset"] == "test"
        assert points["correct"].tolist() == expected.int().tolist()
    assert list(pd.DataFrame(log.rows).columns) == METRIC_COLUMNS


def test_adversarial_evaluator_is_evaluate_threats_by_name():
    model, split = _model(), _split(8)
    plans = {"Linf": attack_plan("fast", "Linf", 10, 2, 1)}
    eps = {"Linf": 8 / 255}
    expected = evaluate_threats(model, "m", split, eps, plans, 6, seed=1, batch_size=3)
    results = make_evaluator("adversarial", data=split, eps=eps, plans=plans, n_attacked=6, seed=1, batch_size=3).run(
        model, "m", "cpu"
    )
    assert list(results) == ["clean", "Linf"]
    for threat, (rows, points) in results.items():
        pd.testing.assert_frame_equal(rows, expected[threat][0])
        pd.testing.assert_frame_equal(points, expected[threat][1])


def test_the_registry_names_its_evaluators_and_refuses_unknown_or_twice_registered_names():
    assert set(EVALUATORS) == {"clean", "corrupted", "adversarial", "shift", "mce"}
    assert all(cls.name == name for name, cls in EVALUATORS.items())
    with pytest.raises(
        ValueError,
        match=r"unknown evaluator 'nope'; registered: \['adversarial', 'clean', 'corrupted', 'mce', 'shift'\]",
    ):
        make_evaluator("nope")
    with pytest.raises(ValueError, match="registered twice"):
        register_evaluator("clean")(type("Again", (), {}))


def test_shift_evaluator_reads_each_batch_once_for_every_predictor():
    models, split = {"a": _model(), "b": tiny_meta(width=8).build().eval()}, _split()
    calls = []

    def scores(images, labels, scoring, targets):
        calls.append(len(images))
        return {name: batch_correct(model, images, labels, scoring, targets) for name, model in models.items()}

    evaluator = make_evaluator("shift", data=split, evalset="noise", corruption="noise", severity=-1, batch_size=10)
    log = evaluator.run(["b", "a"], scores, "cpu")
    assert calls == [10, 10, 3]
    assert [r["model"] for r in log.rows] == ["b", "a"]
    for row in log.rows:
        expected = _by_hand(models[row["model"]], split)
        assert (row["evalset"], row["corruption"], row["severity"]) == ("noise", "noise", -1)
        assert (row["n"], row["correct"]) == (23, int(expected.sum()))


def test_mce_evaluator_is_mce_columns_by_name():
    rows = [{"model": "m", "evalset": "clean", "corruption": "none", "severity": 0, "threat": "none", "accuracy": 0.8}]
    rows += [
        {"model": "m", "evalset": "imagenet-c", "corruption": c, "severity": s, "threat": "none", "accuracy": 0.5}
        for c in ALEXNET_ERRORS
        for s in range(1, 6)
    ]
    metrics = pd.DataFrame(rows)
    table = make_evaluator("mce", evalset="imagenet-c", clean_evalset="clean", dataset="imagenet").run(metrics)
    pd.testing.assert_frame_equal(table, mce_columns(metrics, "imagenet-c", "clean", "imagenet"))
    assert table.loc["m", "mCE"] == pytest.approx(100 * sum(0.5 / e for e in ALEXNET_ERRORS.values()) / 15)
    assert MeanCorruptionError("imagenet-c", "clean", "digits").run(metrics).empty


def test_clean_passes_in_channels_last_give_the_same_points_and_leave_the_model_as_it_was(trained_model, digits_splits):
    """evaluate.channels_last reaches every clean and corrupted pass: the model computes in channels_last inside
    the pass (its convolution weights converted), the per-point results are the contiguous pass's, and after it
    every tensor of the model is as it was, strides included."""
    from robustsoup.models.memory_format import computing_in

    test = digits_splits["test"]
    before = {name: (t.clone(), t.stride()) for name, t in trained_model.state_dict().items()}
    contiguous = clean_correct(trained_model, test, "cpu", batch_size=100)
    last = clean_correct(trained_model, test, "cpu", batch_size=100, channels_last=True)
    assert torch.equal(contiguous, last) and 0 < int(last.sum()) < len(test)
    _, images, labels, _ = next(labelled_batches(test, "cpu", 64))
    assert torch.equal(batch_correct(trained_model, images, labels, channels_last=True), contiguous[:64])
    rows = make_evaluator("clean", data=test, channels_last=True).run(trained_model, "m", "cpu").rows
    assert rows[0]["correct"] == int(contiguous.sum())
    for name, tensor in trained_model.state_dict().items():
        assert torch.equal(tensor, before[name][0]) and tensor.stride() == before[name][1], name
    with computing_in(trained_model, True):
        convs = [t for t in trained_model.state_dict().values() if t.dim() == 4]
        assert convs and all(t.is_contiguous(memory_format=torch.channels_last) for t in convs)
