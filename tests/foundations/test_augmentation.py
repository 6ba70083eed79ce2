"""Training augmentation: seeded, resumable, crops that only shift, flips only where the data set allows them."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from robustsoup.config import ConfigError, training_sections
from robustsoup.data import ImageSplit, get_dataset_spec
from robustsoup.data.registry import TrainAugmentation
from robustsoup.run_config import resolve_config
from robustsoup.train.augment import BatchAugmentation, batch_augmentation, describe_augmentation
from robustsoup.train.loop import TrainSettings, train_model
from robustsoup.train.policies import CleanInputs
from robustsoup.train.run import settings_from

from conftest import tiny_meta


def _images(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Distinct, asymmetric images in (0, 1]: no shift or mirror image of one equals another by accident."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=generator) * 0.9 + 0.1


def _shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` (C, H, W) moved by (dy, dx), zeros where nothing moved in (RandomCrop's padding)."""
    padded = F.pad(x, (4, 4, 4, 4))
    h, w = x.shape[-2:]
    return padded[:, 4 - dy : 4 - dy + h, 4 - dx : 4 - dx + w]


def _explain(out: torch.Tensor, x: torch.Tensor) -> set[tuple[bool, int, int]]:
    """Every (flipped, dy, dx) with |dy|, |dx| ≤ 4 that turns ``x`` into ``out``."""
    return {
        (flip, dy, dx)
        for flip in (False, True)
        for dy in range(-4, 5)
        for dx in range(-4, 5)
        if torch.equal(_shift(x.flip(-1) if flip else x, dy, dx), out)
    }


def test_augmentation_is_seeded():
    x = _images()
    spec = get_dataset_spec("cifar10").augmentation
    first, again, other = (BatchAugmentation(spec, flip=True, seed=s) for s in (0, 0, 1))
    out = first(x)
    assert torch.equal(out, again(x))
    assert torch.equal(first(x), again(x))  # the next batch too
    assert not torch.equal(out, other(x))
    assert not torch.equal(out, first(x))  # a new draw for every batch


def test_pad_crop_keeps_the_shape_and_only_shifts_within_the_padding():
    x = _images()
    augment = BatchAugmentation(TrainAugmentation(crop="pad", padding=4), flip=False, seed=3)
    shifts = set()
    for _ in range(4):
        out = augment(x)
        assert out.shape == x.shape and out.dtype == x.dtype
        for image, original in zip(out, x):
            explained = _explain(image, original)
            assert len(explained) == 1, explained
            shifts |= explained
    assert len(shifts) > 10  # offsets vary over the 9 × 9 possible


@pytest.mark.parametrize("dataset, flips", [("digits", False), ("cifar10", True), ("cifar100", True)])
def test_flips_only_where_the_data_set_allows_them(dataset, flips):
    x = _images(32)
    augment = batch_augmentation("standard", dataset, seed=0)
    assert augment.flip is flips and get_dataset_spec(dataset).augmentation.flip is flips
    flipped = [next(iter(_explain(o, i)))[0] for o, i in zip(augment(x), x)]
    assert any(flipped) is flips
    if flips:
        assert not all(flipped)
    # `crop` never flips, whatever the data set.
    crop = batch_augmentation("crop", dataset, seed=0)
    assert not any(next(iter(_explain(o, i)))[0] for o, i in zip(crop(x), x))


def test_what_each_mode_means_per_data_set():
    assert describe_augmentation("standard", "digits") == "pad-crop(4)"
    assert describe_augmentation("standard", "cifar10") == "pad-crop(4)+flip"
    assert describe_augmentation("crop", "cifar10") == "pad-crop(4)"
    assert describe_augmentation("standard", "imagenet") == "resized-crop(0.08-1)+flip"
    assert describe_augmentation("none", "imagenet") == "none"
    assert batch_augmentation("none", "cifar10") is None
    assert "mirror" in get_dataset_spec("digits").augmentation.why


def test_resized_crop_cuts_a_window_and_resizes_it_bilinearly():
    x = _images(6, size=8)
    whole = BatchAugmentation(TrainAugmentation(crop="resized", scale=(1.0, 1.0), ratio=(1.0, 1.0)), flip=False)
    torch.testing.assert_close(whole(x), x, rtol=0, atol=1e-6)
    quarter = BatchAugmentation(TrainAugmentation(crop="resized", scale=(0.25, 0.25), ratio=(1.0, 1.0)), flip=False)
    out = quarter(x)
    assert out.shape == x.shape
    for image, original in zip(out, x):
        candidates = [
            F.interpolate(original[None, :, t : t + 4, s : s + 4], size=8, mode="bilinear", align_corners=False)[0]
            for t in range(5)
            for s in range(5)
        ]
        assert any(torch.allclose(image, c, atol=1e-5) for c in candidates)
    # No draw fits (an aspect ratio of 2 at the whole area): torchvision's fallback, the central crop at ratio 2.
    fallback = BatchAugmentation(TrainAugmentation(crop="resized", scale=(1.0, 1.0), ratio=(2.0, 2.0)), flip=False)
    expected = F.interpolate(x[:, :, 2:6, :], size=8, mode="bilinear", align_corners=False)
    torch.testing.assert_close(fallback(x), expected, rtol=0, atol=1e-5)
    wide = BatchAugmentation(get_dataset_spec("imagenet").augmentation, flip=True, seed=1)
    out = wide(_images(8, size=24))
    assert out.shape == (8, 3, 24, 24) and float(out.min()) >= 0 and float(out.max()) <= 1


def _split(dataset: str, n: int = 32) -> ImageSplit:
    generator = torch.Generator().manual_seed(0)
    images = (torch.rand(n, 3, 32, 32, generator=generator) * 255).to(torch.uint8)
    return ImageSplit(images, torch.randint(0, 10, (n,), generator=generator), dataset, "train")


def _train(augmentation: str, epochs: int = 3, **kwargs):
    torch.manual_seed(0)
    model = tiny_meta().build()
    settings = TrainSettings(epochs=epochs, lr=0.1, batch_size=8, augmentation=augmentation, seed=2)
    train_model(model, _split("cifar10"), CleanInputs(), settings, torch.device("cpu"), **kwargs)
    return model.state_dict()


class Killed(Exception):
    pass


def test_a_run_killed_after_an_epoch_resumes_to_the_same_weights(tmp_path):
    uninterrupted = _train("standard")
    assert _train("standard").keys() == uninterrupted.keys()
    plain = _train("none")
    assert not torch.equal(plain["net.conv1.weight"], uninterrupted["net.conv1.weight"])

    def kill(epoch):
        if epoch == 1:
            raise Killed

    state = tmp_path / "m.resume.pt"
    with pytest.raises(Killed):
        _train("standard", resume_path=state, fingerprint="f", on_epoch_end=kill)
    resumed = _train("standard", resume_path=state, fingerprint="f")
    for key, tensor in uninterrupted.items():
        assert torch.equal(tensor, resumed[key]), key


class _Recording(CleanInputs):
    """A clean policy that keeps what it was given."""

    def __call__(self, model, x, y):
        self.seen = getattr(self, "seen", []) + [x.clone()]
        return x


def test_the_input_policy_sees_the_augmented_batch():
    split = _split("cifar10", 8)
    policy = _Recording()
    settings = TrainSettings(epochs=1, lr=0.1, batch_size=8, augmentation="crop", seed=5)
    train_model(tiny_meta().build(), split, policy, settings, torch.device("cpu"))
    order = torch.randperm(8, generator=torch.Generator().manual_seed(5))
    expected = batch_augmentation("crop", "cifar10", seed=5)(split.images[order].float() / 255)
    assert torch.equal(policy.seen[0], expected)


def test_the_sidecar_records_the_augmentation(tmp_path):
    from robustsoup.checkpoint import load_meta
    from robustsoup.train.run import train_and_checkpoint

    meta = tiny_meta()
    settings = TrainSettings(epochs=1, lr=0.1, batch_size=16, augmentation="standard")
    out = train_and_checkpoint(
        meta.build(), meta, _split("digits", 16), CleanInputs(), settings, tmp_path / "m.safetensors", "cpu"
    )
    training = load_meta(out).training
    assert training["augmentation"] == "standard" and training["augmentation_ops"] == "pad-crop(4)"


def test_a_bad_augmentation_is_a_config_error_naming_the_allowed_values():
    with pytest.raises(ConfigError, match=r"pretrain\.augmentation.*'flip'.*'standard', 'crop', 'none'"):
        resolve_config({"pretrain": {"augmentation": "flip"}})
    with pytest.raises(ConfigError, match=r"rws\.init\.augmentation"):
        resolve_config({"rws": {"init": {"augmentation": "auto"}}})
    with pytest.raises(ValueError, match="expected one of standard, crop, none"):
        TrainSettings(epochs=1, lr=0.1, augmentation="flip")
    sections = training_sections(resolve_config({}))  # the one list: every section that trains
    assert len(sections) == 10 and "augmentation" not in sections.pop("distill.distillation")  # crops nothing
    assert {s["augmentation"] for s in sections.values()} == {"standard"}
    assert {s["exempt_lr"] for s in sections.values()} == {"schedule"}
    cifar = training_sections(resolve_config({"dataset": "cifar10"}))
    for path, section in cifar.items():
        if path != "distill.distillation":  # the others are $defs/training, read by settings_from
            assert settings_from(section, 0, decay_all=False).augmentation == "standard", path
