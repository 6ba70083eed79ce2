"""The head rule's calibration sees no evaluated corruption type unless asked to (distill.selection.calibration)."""

from __future__ import annotations

import pytest
import torch

from robustsoup.config import ConfigError
from robustsoup.distill.calibration import calibration_shifted, held_out_policy
from robustsoup.distill.config import check_distill_config
from robustsoup.run_config import resolve_config


def _adapt(n: int = 12):
    generator = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=generator), torch.arange(n) % 10


def _never(n):
    raise AssertionError("held-out calibration must not read the evaluated corruptions' copies")


def test_default_calibration_is_held_out_and_never_reads_the_evaluated_corruptions():
    config = resolve_config({"distill": {"selection": {"calibration_copies": 3}}})
    assert config["distill"]["selection"]["calibration"] == "held-out"
    evaluated = set(config["data"]["corruptions"])
    policy = held_out_policy(config)
    assert policy.clean_fraction == 0 and not set(policy.corrupt.corruptions) & evaluated
    images, labels = _adapt()
    chunks = list(calibration_shifted(config, images, labels, _never))
    shifted = torch.cat([x for x, _ in chunks])
    assert shifted.dtype == torch.uint8 and shifted.shape == (3 * len(images), *images.shape[1:])
    assert torch.equal(torch.cat([y for _, y in chunks]), labels.repeat(3))
    assert not torch.equal(shifted[: len(images)], images)  # every image shifted
    assert not torch.equal(shifted[: len(images)], shifted[len(images) : 2 * len(images)])  # independent draws
    again = torch.cat([x for x, _ in calibration_shifted(config, images, labels, _never)])
    assert torch.equal(shifted, again)  # seeded


def test_held_out_calibration_refuses_an_augmentation_that_draws_an_evaluated_corruption():
    config = resolve_config({})
    config["distill"]["augmentation"]["corruptions"] = ["spatter", "fog"]
    assert "fog" in config["data"]["corruptions"]
    with pytest.raises(ConfigError, match=r"distill.selection.calibration.*\['fog'\].*calibration: evaluated"):
        check_distill_config(config)
    config["distill"]["selection"]["calibration"] = "evaluated"
    check_distill_config(config)  # the leak is explicit: accepted
    config["distill"]["selection"]["calibration"] = "held-out"
    config["distill"]["augmentation"]["kind"] = "augmix"  # draws no corruption: nothing leaks
    check_distill_config(config)


def test_evaluated_calibration_reads_the_evaluated_corruptions_n_adapt_images_each():
    config = resolve_config({"distill": {"selection": {"calibration": "evaluated", "n_adapt_images": 5}}})
    images, labels = _adapt()
    asked = []

    def evaluated_sets(n):
        asked.append(n)
        for corruption in ("fog", "contrast"):
            yield corruption, 5, images[:n] // 2, labels[:n]

    chunks = list(calibration_shifted(config, images, labels, evaluated_sets))
    assert asked == [5] and len(chunks) == 2
    assert all(torch.equal(x, images[:5] // 2) and torch.equal(y, labels[:5]) for x, y in chunks)


def test_multihead_evaluation_calibrates_held_out_without_opening_the_corrupted_adapt_copies(monkeypatch):
    """_evaluate_multihead end to end on a tiny multi-head student: held-out calibration never asks for the
    adaptation split's corrupted copies (only the test split's are read, for the table's rows)."""
    from robustsoup.data import ImageSplit
    from robustsoup.distill import stages
    from robustsoup.models import create_model

    config = resolve_config({"distill": {"selection": {"calibration_copies": 2, "mc_samples": 2}}})
    torch.manual_seed(0)
    model = create_model(
        "multihead", 10, [0.3] * 3, [0.3] * 3, base="preact_resnet_small", width=4, activation="relu", dropout=0.25
    ).eval()
    images, labels = _adapt(16)
    adapt = ImageSplit(images, labels, "digits", "adapt")
    test = ImageSplit(images.flip(-1), labels, "digits", "test")
    opened = []

    def corrupted_sets(config_, directory, clean, n_images):
        opened.append(directory)
        yield "fog", 3, clean.images[:n_images] // 2, clean.labels[:n_images]

    monkeypatch.setattr(stages, "_corrupted_sets", corrupted_sets)

    class Meta:
        name = "student-multihead"

    measured, summary = stages._evaluate_multihead(
        config, model, Meta(), test, "test-copies", adapt, "adapt-copies", "cpu"
    )
    assert opened == ["test-copies"]
    assert summary["thresholds"]["calibration"] == "held-out"
    assert summary["thresholds"]["n_shifted"] == 2 * len(adapt)
    assert {r["corruption"] for r in measured.rows} == {"none", "fog"}
    assert len(measured.points) == len(measured.rows)  # every row keeps its per-point results
