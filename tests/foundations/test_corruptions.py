"""Corruptions: the vocabulary, the CIFAR constants, every corruption at 32 and 224 px, determinism, the layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustsoup.data import corruption_ops as ops
from robustsoup.data.corruptions import (
    CIFAR_CONSTANTS,
    CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    FAMILIES,
    IMAGENET_BACKEND,
    IMAGENET_CONSTANTS,
    SEVERITIES,
    STANDARD_CORRUPTIONS,
    constants_for_shape,
    corrupt,
    read_corrupted_split,
    severity_rows,
    write_corrupted_split,
)


def _images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """n smooth-ish colourful uint8 NHWC images (noise on a gradient)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(30, 220, size)
    base = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1), np.full((size, size), 120.0)], -1)
    noise = rng.normal(0, 25, (n, size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _flat(n: int, size: int, value: int) -> np.ndarray:
    return np.full((n, size, size, 3), value, dtype=np.uint8)


# ------------------------------------------------------------- vocabulary and constants


def test_vocabulary():
    assert len(STANDARD_CORRUPTIONS) == 15 and len(EXTRA_CORRUPTIONS) == 4
    assert CORRUPTIONS == STANDARD_CORRUPTIONS + EXTRA_CORRUPTIONS and len(set(CORRUPTIONS)) == 19
    assert set(FAMILIES) == set(CORRUPTIONS) and set(FAMILIES.values()) == {"noise", "blur", "weather", "digital"}
    assert [FAMILIES[c] for c in EXTRA_CORRUPTIONS] == ["noise", "blur", "weather", "digital"]
    assert SEVERITIES == (1, 2, 3, 4, 5)
    for table in (CIFAR_CONSTANTS, IMAGENET_CONSTANTS):
        assert set(table) == set(CORRUPTIONS) and all(len(v) == 5 for v in table.values())
    assert set(IMAGENET_BACKEND.values()) <= {"corrupt_tta", "robustsoup"}


def test_cifar_constants_are_make_cifar_c():
    expected = {
        "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
        "shot_noise": (500, 250, 100, 75, 50),
        "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
        "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
        "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1),
        "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
        "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
        "jpeg_compression": (80, 65, 58, 50, 40),
        "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    }
    for name, values in expected.items():
        assert CIFAR_CONSTANTS[name] == pytest.approx(values), name
    assert CIFAR_CONSTANTS["motion_blur"][4] == (9, 2.5)
    assert CIFAR_CONSTANTS["elastic_transform"][1] == pytest.approx((32 * 0.05, 32 * 0.2, 32 * 0.07))
    assert IMAGENET_CONSTANTS["gaussian_noise"] == pytest.approx((0.08, 0.12, 0.18, 0.26, 0.38))
    assert IMAGENET_CONSTANTS["elastic_transform"][0] == pytest.approx((244 * 2, 244 * 0.7, 244 * 0.1))


def test_constants_follow_the_size_and_can_be_forced():
    assert constants_for_shape(32, 32) == "cifar"
    assert constants_for_shape(224, 224) == "imagenet"
    assert constants_for_shape(64, 64) == "imagenet"
    x = _flat(2, 64, 128)
    auto = corrupt(x, "gaussian_noise", 5, 0)
    assert np.array_equal(auto, corrupt(x, "gaussian_noise", 5, 0, constants="imagenet"))
    cifar = corrupt(x, "gaussian_noise", 5, 0, constants="cifar")
    assert cifar.astype(float).std() < auto.astype(float).std()


def test_gaussian_noise_std_is_sigma():
    grey = _flat(8, 32, 128)
    for sigma, severity in zip(CIFAR_CONSTANTS["gaussian_noise"], SEVERITIES):
        out = corrupt(grey, "gaussian_noise", severity, seed=severity).astype(np.float64) / 255
        assert out.std() == pytest.approx(sigma, rel=0.03), severity


def test_shot_and_impulse_noise_statistics():
    grey = _flat(8, 32, 128)
    for photons, severity in zip(CIFAR_CONSTANTS["shot_noise"], SEVERITIES):
        out = corrupt(grey, "shot_noise", severity, seed=1).astype(np.float64) / 255
        assert out.std() == pytest.approx(np.sqrt(128 / 255 / photons), rel=0.05), severity
    for amount, severity in zip(CIFAR_CONSTANTS["impulse_noise"], SEVERITIES):
        out = corrupt(grey, "impulse_noise", severity, seed=2)
        flipped = np.isin(out, (0, 255)).mean()
        assert flipped == pytest.approx(amount, rel=0.15), severity
        assert (out == 255).mean() == pytest.approx(amount / 2, rel=0.2)


def test_brightness_and_contrast_are_monotone_in_severity():
    x = _images(4, 32)
    bright = [corrupt(x, "brightness", s, 0).astype(float).mean() for s in SEVERITIES]
    spread = [corrupt(x, "contrast", s, 0).astype(float).std(axis=(1, 2)).mean() for s in SEVERITIES]
    assert x.astype(float).mean() < bright[0] and np.all(np.diff(bright) > 0)
    assert x.astype(float).std(axis=(1, 2)).mean() > spread[0] and np.all(np.diff(spread) < 0)


# ------------------------------------------------------------- every corruption runs


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_at_32px_nchw(name):
    x = _images(2, 32).transpose(0, 3, 1, 2).copy()  # NCHW
    for severity in SEVERITIES:
        out = corrupt(x, name, severity, seed=0)
        assert out.dtype == np.uint8 and out.shape == x.shape
        assert not np.array_equal(out, x), (name, severity)


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_every_corruption_at_224px_nhwc(name):
    x = _images(1, 224, seed=1)
    for severity in SEVERITIES:
        out = corrupt(x, name, severity, seed=0)
        assert out.dtype == np.uint8 and out.shape == x.shape
        assert not np.array_equal(out, x), (name, severity)


def test_torch_input_gives_torch_output_and_single_images_work():
    x = torch.from_numpy(_images(2, 32).transpose(0, 3, 1, 2).copy())
    out = corrupt(x, "fog", 3, seed=4)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.uint8 and out.shape == x.shape
    one = corrupt(x[1].numpy(), "fog", 3, seed=4, index_offset=1)
    assert np.array_equal(one, out[1].numpy())


# ------------------------------------------------------------- determinism


@pytest.mark.parametrize("name", sorted(ops.RANDOM_OPS))
def test_deterministic_and_chunk_invariant(name):
    x = _images(4, 32)
    first = corrupt(x, name, 3, seed=7)
    assert np.array_equal(first, corrupt(x.copy(), name, 3, seed=7))
    assert not np.array_equal(first, corrupt(x, name, 3, seed=8))
    assert np.array_equal(first[2:], corrupt(x[2:], name, 3, seed=7, index_offset=2))


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_threads_do_not_change_the_bytes(name):
    x = _images(7, 32, seed=3)  # 7 images over 3 threads: ranges of unequal length
    one = corrupt(x, name, 4, seed=5, workers=1)
    assert np.array_equal(one, corrupt(x, name, 4, seed=5, workers=3))


def test_groups_of_a_batch_equal_one_group_at_a_time():
    from robustsoup.data.corruptions import corrupt_groups

    x = torch.from_numpy(_images(9, 32, seed=4).transpose(0, 3, 1, 2).copy())
    groups = [
        ([0, 4], "fog", 2),
        ([1], "zoom_blur", 5),
        ([2, 3, 8], "gaussian_noise", 1),
        ([5], "snow", 3),
        ([], "frost", 1),
    ]
    expected = x.clone()
    for rows, name, severity in groups:
        if rows:
            expected[rows] = corrupt(x[rows], name, severity, seed=3, index_offset=18)
    for workers in (1, 3):
        out = corrupt_groups(x, groups, seed=3, index_offset=18, workers=workers)
        assert isinstance(out, torch.Tensor) and torch.equal(out, expected)  # rows 6, 7 unchanged


def test_thread_ranges_cover_the_batch_once():
    from robustsoup.data.corruptions import _chunks

    for n, workers, pixels in [(1, 4, 1024), (7, 3, 1024), (1000, 2, 1024), (5, 8, 224 * 224), (300, 1, 1024)]:
        ranges = _chunks(n, workers, pixels)
        assert [i for r in ranges for i in range(r.start, r.stop)] == list(range(n))
        assert len(ranges) <= max(1, workers * 4)


def test_batched_plasma_maps_equal_one_map_at_a_time():
    batched = ops.plasma_fractals(32, 2.5, [np.random.default_rng(i) for i in range(3)])
    for i in range(3):
        assert np.array_equal(batched[i], ops.plasma_fractals(32, 2.5, [np.random.default_rng(i)])[0])


def test_deterministic_corruptions_ignore_the_seed():
    x = _images(2, 32)
    for name in sorted(set(CORRUPTIONS) - ops.RANDOM_OPS):
        assert np.array_equal(corrupt(x, name, 2, seed=0), corrupt(x, name, 2, seed=1)), name


# ------------------------------------------------------------- reference semantics


def test_glass_shuffle_equals_the_sequential_loop():
    def sequential(image, delta, iterations, rng):
        x = image.copy()
        height, width = x.shape[:2]
        rows, cols = range(height - delta, delta, -1), range(width - delta, delta, -1)
        for _ in range(iterations):
            steps = rng.integers(-delta, delta, size=(len(rows) * len(cols), 2))
            for k, (h, w) in enumerate((h, w) for h in rows for w in cols):
                dx, dy = steps[k]
                x[h, w] = x[h + dy, w + dx]  # what the reference's view "swap" does
        return x

    x = _images(3, 20)[:, :, :17]
    for delta, iterations in [(1, 2), (2, 3), (4, 1)]:
        fast = ops.glass_shuffle(x, delta, iterations, [np.random.default_rng(i) for i in range(3)])
        slow = np.stack([sequential(x[i], delta, iterations, np.random.default_rng(i)) for i in range(3)])
        assert np.array_equal(fast, slow), (delta, iterations)


def test_motion_blur_is_imagemagicks_one_sided_gaussian_ray():
    weights, rows, cols = ops.motion_kernel(6, 1.5, 0.0)
    assert len(weights) == 13 and weights.sum() == pytest.approx(1) and np.all(np.diff(weights) < 0)
    assert np.array_equal(rows, np.zeros(13)) and np.array_equal(cols, np.arange(13))
    _, rows, cols = ops.motion_kernel(6, 1.5, 90.0)
    assert np.array_equal(rows, np.arange(13)) and np.array_equal(cols, np.zeros(13))
    # a bright dot is smeared towards the left at angle 0 (each pixel gathers from its right)
    dot = np.zeros((9, 15, 3))
    dot[4, 10] = 255
    smeared = ops.motion_blur_image(dot, 6, 1.5, 0.0)
    assert smeared[4, 10, 0] == pytest.approx(255 * weights[0])
    assert smeared[4, 9, 0] > smeared[4, 8, 0] > 0 and smeared[4, 11:].sum() == 0 and smeared[3].sum() == 0


def test_own_implementation_matches_corrupt_tta_where_it_follows_the_reference():
    # corrupt-tta is pinned in requirements.txt: a broken install must fail here, never skip
    from corrupt_tta import corruptions as ctta

    x = _images(1, 48, seed=3)
    exact = ["gaussian_blur", "defocus_blur", "zoom_blur", "jpeg_compression", "pixelate", "contrast"]
    for name in exact + ["brightness", "saturate"]:
        for severity in SEVERITIES:
            ours = ops.OPS[name](x, IMAGENET_CONSTANTS[name][severity - 1], [])[0].astype(int)
            theirs = np.clip(np.asarray(getattr(ctta, name)(x[0], severity), dtype=float), 0, 255).astype(np.uint8)
            tolerance = 0 if name in exact else 1  # corrupt-tta converts HSV in float32 with OpenCV
            assert np.abs(ours - theirs).max() <= tolerance, (name, severity)


def test_frost_textures_come_from_the_installed_wheel():
    sizes = [ops.frost_texture(i, 0.2).shape for i in range(5)]
    assert all(h >= 32 and w >= 32 and c == 3 for h, w, c in sizes)
    assert ops.frost_texture(0, 1.0).shape == (600, 900, 3)


# ------------------------------------------------------------- errors


def test_bad_arguments_are_named():
    x = _images(1, 32)
    with pytest.raises(ValueError, match="unknown corruption 'rain'"):
        corrupt(x, "rain", 1)
    with pytest.raises(ValueError, match="severity must be an integer in 1..5, got 6"):
        corrupt(x, "fog", 6)
    with pytest.raises(TypeError, match="expected uint8"):
        corrupt(x.astype(np.float32), "fog", 1)
    with pytest.raises(ValueError, match="pass layout"):
        corrupt(np.zeros((1, 3, 8, 3), np.uint8), "fog", 1)


# ------------------------------------------------------------- CIFAR-10-C layout


def test_layout_round_trip_and_row_order(tmp_path):
    x = _images(5, 32).transpose(0, 3, 1, 2).copy()
    labels = torch.arange(5) % 3
    names = ["gaussian_noise", "contrast", "frost"]
    written = write_corrupted_split(torch.from_numpy(x), labels, tmp_path, corruptions=names, seed=3, chunk_size=2)
    assert set(written) == set(names) | {"labels"}
    stored_labels = np.load(tmp_path / "labels.npy")
    assert stored_labels.dtype == np.int64 and np.array_equal(stored_labels, np.tile(labels.numpy(), 5))
    for name in names:
        stored = np.load(tmp_path / f"{name}.npy")
        assert stored.dtype == np.uint8 and stored.shape == (25, 32, 32, 3)
        for severity in SEVERITIES:
            expected = corrupt(x, name, severity, seed=3)  # NCHW, whole split at once
            rows = stored[(severity - 1) * 5 : severity * 5]
            assert np.array_equal(rows, expected.transpose(0, 2, 3, 1)), (name, severity)
            images, got_labels = read_corrupted_split(tmp_path, name, severity)
            assert images.dtype == torch.uint8 and images.shape == (5, 3, 32, 32)
            assert np.array_equal(images.numpy(), expected) and torch.equal(got_labels, labels)
    assert not list(tmp_path.glob(".*partial"))


def test_subset_of_severities(tmp_path):
    x = _images(3, 32).transpose(0, 3, 1, 2).copy()
    write_corrupted_split(x, np.array([0, 1, 2]), tmp_path, corruptions=["fog"], severities=(2, 5))
    assert np.load(tmp_path / "fog.npy").shape == (6, 32, 32, 3)
    images, _ = read_corrupted_split(tmp_path, "fog", 5, severities=(2, 5))
    assert np.array_equal(images.numpy(), corrupt(x, "fog", 5, seed=0))
    assert severity_rows(5, 3, (2, 5)) == slice(3, 6)
    with pytest.raises(ValueError, match="not among the written severities"):
        read_corrupted_split(tmp_path, "fog", 3, severities=(2, 5))


def test_reader_says_what_is_missing_or_wrong(tmp_path):
    x = _images(4, 32).transpose(0, 3, 1, 2).copy()
    write_corrupted_split(x, np.arange(4), tmp_path, corruptions=["contrast"])
    missing = r"snow\.npy does not exist; expected snow\.npy, uint8 of shape \(20, H, W, 3\)"
    with pytest.raises(FileNotFoundError, match=missing):
        read_corrupted_split(tmp_path, "snow", 1)
    np.save(tmp_path / "contrast.npy", np.zeros((19, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8 of shape \(20, H, W, 3\) .* found uint8 \(19, 32, 32, 3\)"):
        read_corrupted_split(tmp_path, "contrast", 1)
    np.save(tmp_path / "contrast.npy", np.zeros((20, 3, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"found uint8 \(20, 3, 32, 32\)"):
        read_corrupted_split(tmp_path, "contrast", 1)
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="labels.npy does not exist"):
        read_corrupted_split(tmp_path, "contrast", 1)


def test_centre_zoom_matches_scipy_ndimage_zoom():
    from scipy import ndimage

    x = _images(3, 32).astype(np.float32) / 255
    for factor in [1.0, 1.01, 1.06, 1.13, 1.25, 1.3, 4.5]:
        crop = int(np.ceil(32 / factor))
        top = (32 - crop) // 2
        zoomed = ndimage.zoom(x[:, top : top + crop, top : top + crop], (1, factor, factor, 1), order=1)
        trim = (zoomed.shape[1] - 32) // 2
        expected = zoomed[:, trim : trim + 32, trim : trim + 32]
        np.testing.assert_allclose(ops._zoom_centre(x, factor), expected, rtol=0, atol=1e-6)


def test_reader_rejects_a_truncated_file(tmp_path):
    write_corrupted_split(_images(2, 32).transpose(0, 3, 1, 2).copy(), np.arange(2), tmp_path, corruptions=["fog"])
    path = tmp_path / "fog.npy"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="unreadable or truncated") as error:
        read_corrupted_split(tmp_path, "fog", 2)
    # says how short it is: the bytes on disk against what its header promises
    assert "1000 bytes on disk" in str(error.value) and "expected from its header (shape (10, 32, 32, 3)" in str(
        error.value
    )
