"""The 19 image corruptions as batch operations (see :mod:`robustsoup.data.corruptions`).

Every operation takes uint8 images ``(N, H, W, 3)``, its constants for one
severity and one ``numpy.random.Generator`` per image (an empty list for the
deterministic ones), and returns uint8 images of the same shape. Results that
are computed in floating point are clipped and then *truncated* to uint8, the
way ``np.uint8(...)`` does in Hendrycks' scripts.

This is an independent implementation of the semantics of
``hendrycks/robustness`` (``ImageNet-C/create_c/make_cifar_c.py`` and
``make_imagenet_c.py``); the constants live in :mod:`.corruptions`.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
from collections.abc import Callable, Sequence
from importlib import resources

import numpy as np

Generators = Sequence[np.random.Generator]
Op = Callable[[np.ndarray, object, Generators], np.ndarray]


def _ndimage():
    """scipy.ndimage, imported on first use: every job imports this module (paths → rws.config →
    data.corruptions) and most corrupt nothing, while scipy.ndimage costs a few tenths of a second to import."""
    from scipy import ndimage

    return ndimage


# The five frost textures that Hendrycks' scripts draw from (frost6 is listed in
# the scripts but never drawn: the index is drawn from 0..4). They are read from
# the corrupt-tta wheel (version 0.1.7), never downloaded; the hashes make a
# different file fail loudly instead of silently changing the data.
FROST_FILES = {
    "frost1.png": "ff9f907860bd7a835d459e32f9d588062b7f61ee267343cc7222b56753a14755",
    "frost2.png": "fe211a89b336999c207a852ce05818d4545d0b57c5beadd824b4cc9d9a9b6137",
    "frost3.png": "2d0d50b4a9bb213f38b024ef7768731bb83cc08d2f26b5766bbc167cdfa0e504",
    "frost4.jpg": "3f8b91ca1a9fa7167b09e773da53f5ae60d0a1fd88f02a783f6e328a72887f6e",
    "frost5.jpg": "5fc6a19df4a429ba68abdcc8f8a4278d4c9f81c9ccafd2c92ab0c8cf8992ebd2",
}


# ---------------------------------------------------------------- helpers


def _unit(images: np.ndarray) -> np.ndarray:
    """uint8 → float64 in [0, 1]."""
    return images.astype(np.float64) / 255.0


def _from_unit(values: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8, clipped then truncated (as ``np.uint8`` on the reference's output)."""
    return (np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def _from_255(values: np.ndarray) -> np.ndarray:
    """[0, 255] floats → uint8, clipped then truncated."""
    return np.clip(values, 0.0, 255.0).astype(np.uint8)


def _per_image(rngs: Generators, draw: Callable[[np.random.Generator], np.ndarray]) -> np.ndarray:
    """Stack one draw per image, each from that image's own generator."""
    return np.stack([draw(rng) for rng in rngs])


def _blur_spatial(batch: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0) -> np.ndarray:
    """Gaussian blur over the two spatial axes of (N, H, W[, C]) only (skimage's defaults)."""
    sigmas = (0.0, sigma, sigma) + (0.0,) * (batch.ndim - 3)
    return _ndimage().gaussian_filter(batch, sigma=sigmas, mode=mode, truncate=truncate)


def _linear_taps(size: int, factor: float, first: int, count: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source taps and weights of outputs first … first+count−1 of a linear zoom of ``size`` samples.

    Same sampling as ``scipy.ndimage.zoom(order=1)``: round(size·factor) outputs whose
    ends sit on the input's ends, output j reading input position j·(size−1)/(out−1).
    """
    out_size = int(round(size * factor))
    ratio = (size - 1) / (out_size - 1) if out_size > 1 else 0.0
    position = np.arange(first, first + count) * ratio
    low = np.floor(position).astype(np.intp)
    return low, np.minimum(low + 1, size - 1), position - low


def _zoom_centre(batch: np.ndarray, factor: float, dtype: np.dtype | None = None) -> np.ndarray:
    """Zoom the centre of (N, H, W, C) in by ``factor`` (bilinear), keeping H × W.

    The centre ceil(H/f) × ceil(W/f) is upsampled by ``factor`` as
    ``scipy.ndimage.zoom(order=1)`` does and the middle H × W of the result kept;
    computed separably (rows, then columns) in float64, which is several times
    faster than ``ndimage.zoom`` on a batch and gives the same values up to the
    last bit of the result's dtype (``dtype``, default the batch's). A float64
    batch is read without a copy; each pass computes a·(1−t) + b·t in place.
    """
    _, height, width, _ = batch.shape
    crop_h, crop_w = math.ceil(height / factor), math.ceil(width / factor)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    crop = np.asarray(batch[:, top : top + crop_h, left : left + crop_w], dtype=np.float64)
    low, high, t = _linear_taps(crop_h, factor, (int(round(crop_h * factor)) - height) // 2, height)
    # np.take copies whole rows / columns at once (indexing a middle axis gathers element by element)
    rows = _lerp(np.take(crop, low, axis=1), np.take(crop, high, axis=1), t[None, :, None, None])
    low, high, t = _linear_taps(crop_w, factor, (int(round(crop_w * factor)) - width) // 2, width)
    cols = _lerp(np.take(rows, low, axis=2), np.take(rows, high, axis=2), t[None, None, :, None])
    return cols.astype(dtype or batch.dtype)


def _lerp(lower: np.ndarray, upper: np.ndarray, t: np.ndarray) -> np.ndarray:
    """lower·(1−t) + upper·t, overwriting the (fresh) arrays ``lower`` and ``upper``."""
    lower *= 1 - t
    upper *= t
    lower += upper
    return lower


def motion_kernel(radius: float, sigma: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ImageMagick's motion-blur kernel: weights and integer (row, column) offsets.

    ``MagickMotionBlurImage(radius, sigma, angle)`` averages 2·ceil(radius)+1
    pixels on a one-sided ray leaving each pixel at ``angle`` degrees
    (clockwise from the +x axis, y pointing down); tap i has the Gaussian
    weight exp(−i²/2σ²) (normalized) and sits at (round(i·sin a), round(i·cos a)),
    rounding halves down as ImageMagick's ceil(v − 0.5) does.
    """
    width = 2 * math.ceil(radius) + 1
    taps = np.arange(width, dtype=np.float64)
    weights = np.exp(-(taps**2) / (2.0 * max(sigma, 1e-12) ** 2))
    weights /= weights.sum()
    theta = math.radians(angle)
    rows = np.ceil(taps * math.sin(theta) - 0.5).astype(np.int64)
    cols = np.ceil(taps * math.cos(theta) - 0.5).astype(np.int64)
    return weights, rows, cols


def motion_blur_image(image: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """Motion-blur one (H, W, C) image with ImageMagick's semantics; float result in the input's units.

    Pixels beyond the border repeat the edge pixel (ImageMagick's default
    virtual-pixel method).
    """
    weights, rows, cols = motion_kernel(radius, sigma, angle)
    height, width = image.shape[:2]
    pad = int(max(np.abs(rows).max(), np.abs(cols).max()))
    padded = np.pad(image.astype(np.float64), ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    out = np.zeros(image.shape, dtype=np.float64)
    for weight, dr, dc in zip(weights, rows, cols):
        out += weight * padded[pad + dr : pad + dr + height, pad + dc : pad + dc + width]
    return out


def _quantum16_to_uint8(values: np.ndarray) -> np.ndarray:
    """8-bit values as the reference gets them from ImageMagick (Q16): a 16-bit quantum, then floor.

    ``values`` are in 8-bit units. ImageMagick holds the result as a 16-bit quantum, round(v·257),
    and the 8-bit PNG the reference decodes keeps floor(quantum / 257) (equal to the reference on
    every value of the parity goldens; rounding v to 8 bits instead differs by a grey level on
    about half of them).
    """
    quantum = np.clip(np.floor(values * 257.0 + 0.5), 0, 65535)
    return np.floor(quantum / 257.0).astype(np.uint8)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The anti-aliased disk of defocus blur: a normalized hard disk, then a small Gaussian.

    The grid is 17 × 17 for radius ≤ 8 (a 3 × 3 Gaussian of σ ``alias_blur``
    smooths it) and (2r+1)² otherwise (5 × 5 Gaussian), as in the reference.
    """
    import cv2

    half = 8 if radius <= 8 else int(radius)
    grid = np.arange(-half, half + 1)
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= disk.sum()
    size = 3 if radius <= 8 else 5
    return cv2.GaussianBlur(disk, ksize=(size, size), sigmaX=alias_blur)


def plasma_fractals(size: int, decay: float, rngs: Generators) -> np.ndarray:
    """Periodic diamond–square height maps of side ``size`` (a power of two), scaled to [0, 1]: (N, size,
    size), map i from ``rngs[i]``.

    Every new point is the mean of its four neighbours plus uniform noise of
    half-width wibble², wibble starting at 100 and divided by ``decay`` at
    every halving of the step. The arithmetic runs on the stacked maps at once;
    each generator makes the same draws in the same order as for one map, so
    map i is bit for bit ``plasma_fractals(size, decay, [rngs[i]])[0]``.
    """
    if size < 2 or size & (size - 1):
        raise ValueError(f"plasma map size must be a power of two ≥ 2, got {size}")
    height_map = np.zeros((len(rngs), size, size), dtype=np.float64)
    step, wibble = size, 100.0

    def jitter(shape: tuple[int, ...]) -> np.ndarray:
        return _per_image(rngs, lambda rng: wibble * rng.uniform(-wibble, wibble, shape[1:]))

    while step >= 2:
        half = step // 2
        corners = height_map[:, 0::step, 0::step]
        # square step: centres of the cells from their four corners
        around = corners + np.roll(corners, -1, axis=1)
        around = around + np.roll(around, -1, axis=2)
        height_map[:, half::step, half::step] = around / 4 + jitter(around.shape)
        centres = height_map[:, half::step, half::step]
        # diamond step: midpoints of horizontal edges (between corners left/right, centres up/down)
        around = centres + np.roll(centres, 1, axis=1) + corners + np.roll(corners, -1, axis=2)
        height_map[:, 0::step, half::step] = around / 4 + jitter(around.shape)
        # ... and of vertical edges (corners up/down, centres left/right)
        around = centres + np.roll(centres, 1, axis=2) + corners + np.roll(corners, -1, axis=1)
        height_map[:, half::step, 0::step] = around / 4 + jitter(around.shape)
        step = half
        wibble /= decay
    height_map -= height_map.min(axis=(1, 2), keepdims=True)
    return height_map / height_map.max(axis=(1, 2), keepdims=True)


def glass_shuffle(images: np.ndarray, max_delta: int, iterations: int, rngs: Generators) -> np.ndarray:
    """Glass blur's local pixel shuffle, vectorised, with the reference's exact semantics.

    The reference visits (h, w) for h from H−δ down to δ+1 and, inside, w from
    W−δ down to δ+1, draws (dx, dy) uniformly from {−δ, …, δ−1}² and "swaps"
    pixel (h, w) with (h+dy, w+dx). Because the swap is a tuple assignment of
    numpy views, only (h, w) changes: it takes the value that (h+dy, w+dx) has
    at that moment. So a pixel takes the *new* value of its source if the
    source was visited before it, else the source's old value. Following those
    links to the end gives every visited pixel's final source in a few
    vectorised passes, identical to the sequential loop.
    """
    n, height, width, channels = images.shape
    rows = np.arange(height - max_delta, max_delta, -1)
    cols = np.arange(width - max_delta, max_delta, -1)
    if n == 0 or rows.size == 0 or cols.size == 0:
        return images.copy()
    visit_r = np.repeat(rows, cols.size)  # visiting order, row-major
    visit_c = np.tile(cols, rows.size)
    n_visits = visit_r.size
    visit_pixel = visit_r * width + visit_c
    visit_time = np.full(height * width, -1, dtype=np.int64)
    visit_time[visit_pixel] = np.arange(n_visits)
    now = np.arange(n_visits)
    batch = np.arange(n)[:, None]
    flat = images.reshape(n, height * width, channels).copy()
    for _ in range(iterations):
        # (N, visits, 2): dx then dy, as the reference draws them
        steps = _per_image(rngs, lambda rng: rng.integers(-max_delta, max_delta, size=(n_visits, 2)))
        source = (visit_r + steps[..., 1]) * width + (visit_c + steps[..., 0])
        source_time = visit_time[source]
        # link[b, t] = visit index whose new value pixel t copies, or -1 if it copies an old value
        link = np.where((source_time >= 0) & (source_time < now), source_time, -1)
        final = np.where(link < 0, source, -1)
        while (pending := link >= 0).any():
            target = np.where(pending, link, 0)
            target_final, target_link = final[batch, target], link[batch, target]
            done = pending & (target_final >= 0)
            final = np.where(done, target_final, final)
            # pointer jumping for the rest: copying a pixel that copies is copying what it copies
            link = np.where(done, -1, np.where(pending, target_link, link))
        flat[:, visit_pixel] = flat[batch, final]
    return flat.reshape(images.shape)


@functools.cache
def frost_texture(index: int, scale: float) -> np.ndarray:
    """Frost texture ``index`` (0–4) as RGB uint8, resized by ``scale`` (bilinear, OpenCV).

    Read from the corrupt-tta package's installed files; nothing is
    downloaded. The array is read-only and cached.
    """
    import cv2

    name = sorted(FROST_FILES)[index]
    try:
        blob = resources.files("corrupt_tta").joinpath("assets", "frost", name).read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise RuntimeError(
            f"the frost corruption needs the frost texture {name} shipped in the corrupt-tta "
            f"wheel; install corrupt-tta==0.1.7 ({exc})"
        ) from exc
    digest = hashlib.sha256(blob).hexdigest()
    if digest != FROST_FILES[name]:
        raise RuntimeError(
            f"frost texture {name} from corrupt-tta has SHA-256 {digest}, expected {FROST_FILES[name]} "
            "(corrupt-tta 0.1.7); the frost corruption would not be reproducible"
        )
    bgr = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR)
    if scale != 1.0:
        bgr = cv2.resize(bgr, (0, 0), fx=scale, fy=scale)
    rgb = np.ascontiguousarray(bgr[..., ::-1])
    rgb.flags.writeable = False
    return rgb


def _texture_covering(index: int, scale: float, height: int, width: int) -> np.ndarray:
    """The frost texture, enlarged (bilinear) only if it is smaller than H × W."""
    texture = frost_texture(index, scale)
    th, tw = texture.shape[:2]
    if th >= height and tw >= width:
        return texture
    import cv2

    grow = max(height / th, width / tw)
    return cv2.resize(texture, (math.ceil(tw * grow), math.ceil(th * grow)), interpolation=cv2.INTER_LINEAR)


# ---------------------------------------------------------------- noise


def gaussian_noise(images: np.ndarray, sigma: float, rngs: Generators) -> np.ndarray:
    unit = _unit(images)
    return _from_unit(unit + _per_image(rngs, lambda rng: rng.normal(0.0, sigma, unit.shape[1:])))


def shot_noise(images: np.ndarray, photons: float, rngs: Generators) -> np.ndarray:
    unit = _unit(images)
    counts = np.stack([rng.poisson(unit[i] * photons) for i, rng in enumerate(rngs)])
    return _from_unit(counts / photons)


def impulse_noise(images: np.ndarray, amount: float, rngs: Generators) -> np.ndarray:
    # salt & pepper per value: flip with probability `amount`, half to 1, half to 0
    unit = _unit(images)
    flip = _per_image(rngs, lambda rng: rng.random(unit.shape[1:])) < amount
    salt = _per_image(rngs, lambda rng: rng.random(unit.shape[1:])) < 0.5
    unit[flip & salt] = 1.0
    unit[flip & ~salt] = 0.0
    return _from_unit(unit)


def speckle_noise(images: np.ndarray, sigma: float, rngs: Generators) -> np.ndarray:
    unit = _unit(images)
    return _from_unit(unit * (1.0 + _per_image(rngs, lambda rng: rng.normal(0.0, sigma, unit.shape[1:]))))


# ---------------------------------------------------------------- blur


def gaussian_blur(images: np.ndarray, sigma: float, rngs: Generators) -> np.ndarray:
    return _from_unit(_blur_spatial(_unit(images), sigma))


def glass_blur(images: np.ndarray, c: tuple[float, int, int], rngs: Generators) -> np.ndarray:
    sigma, max_delta, iterations = c
    blurred = (_blur_spatial(_unit(images), sigma) * 255.0).astype(np.uint8)
    shuffled = glass_shuffle(blurred, max_delta, iterations, rngs)
    return _from_unit(_blur_spatial(_unit(shuffled), sigma))


def defocus_blur(images: np.ndarray, c: tuple[float, float], rngs: Generators) -> np.ndarray:
    import cv2

    kernel = disk_kernel(*c)
    unit = _unit(images)
    # correlation with mirrored borders (OpenCV's default BORDER_REFLECT_101)
    return _from_unit(np.stack([cv2.filter2D(image, -1, kernel) for image in unit]))


def motion_blur(images: np.ndarray, c: tuple[float, float], rngs: Generators) -> np.ndarray:
    radius, sigma = c
    out = np.empty_like(images)
    for i, rng in enumerate(rngs):
        out[i] = _quantum16_to_uint8(motion_blur_image(images[i], radius, sigma, rng.uniform(-45.0, 45.0)))
    return out


def zoom_blur(images: np.ndarray, factors: tuple[float, float, float], rngs: Generators) -> np.ndarray:
    unit = (images.astype(np.float64) / 255.0).astype(np.float32)
    wide = unit.astype(np.float64)  # what every zoom reads (exact: float32 → float64)
    zooms = np.arange(*factors)
    total = np.zeros_like(unit)
    for factor in zooms:
        total += _zoom_centre(wide, float(factor), np.float32)
    return _from_unit((unit + total) / (len(zooms) + 1))


# ---------------------------------------------------------------- weather


def snow(images: np.ndarray, c: tuple, rngs: Generators) -> np.ndarray:
    mean, std, zoom, threshold, radius, sigma, keep = c
    _, height, width, _ = images.shape
    unit = (images.astype(np.float64) / 255.0).astype(np.float32)
    flakes = [rng.normal(mean, std, (height, width)) for rng in rngs]
    layer = _zoom_centre(np.stack(flakes)[..., None], zoom)
    layer[layer < threshold] = 0
    # the reference passes the flake layer through an 8-bit greyscale image
    layer8 = (np.clip(layer, 0, 1) * 255).astype(np.uint8)
    streaks = np.empty(layer.shape, dtype=np.float64)
    for i, rng in enumerate(rngs):
        blurred = motion_blur_image(layer8[i], radius, sigma, rng.uniform(-135.0, -45.0))
        streaks[i] = _quantum16_to_uint8(blurred) / 255.0
    grey = unit @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    whitened = keep * unit + (1 - keep) * np.maximum(unit, grey[..., None] * 1.5 + 0.5)
    return _from_unit(whitened + streaks + np.rot90(streaks, k=2, axes=(1, 2)))


def frost(images: np.ndarray, c: tuple[float, float, float], rngs: Generators) -> np.ndarray:
    image_weight, frost_weight, texture_scale = c
    _, height, width, _ = images.shape
    out = np.empty_like(images)
    for i, rng in enumerate(rngs):
        texture = _texture_covering(int(rng.integers(5)), texture_scale, height, width)
        th, tw = texture.shape[:2]
        # the upper bound of the crop offset is exclusive, as in the reference
        top = int(rng.integers(0, th - height)) if th > height else 0
        left = int(rng.integers(0, tw - width)) if tw > width else 0
        crop = texture[top : top + height, left : left + width]
        out[i] = _from_255(image_weight * images[i].astype(np.float64) + frost_weight * crop)
    return out


def fog(images: np.ndarray, c: tuple[float, float], rngs: Generators) -> np.ndarray:
    amount, decay = c
    _, height, width, _ = images.shape
    size = 1 << max(1, (max(height, width) - 1).bit_length())  # smallest power of two ≥ the side
    unit = _unit(images)
    peak = unit.max(axis=(1, 2, 3), keepdims=True)
    haze = plasma_fractals(size, decay, rngs)[:, :height, :width]
    return _from_unit((unit + amount * haze[..., None]) * peak / (peak + amount))


def spatter(images: np.ndarray, c: tuple, rngs: Generators) -> np.ndarray:
    import cv2

    mean, std, sigma, threshold, strength, mud = c
    _, height, width, _ = images.shape
    unit = images.astype(np.float32) / 255.0
    out = np.empty_like(images)
    for i, rng in enumerate(rngs):
        liquid = _ndimage().gaussian_filter(rng.normal(mean, std, (height, width)), sigma, mode="nearest", truncate=4.0)
        liquid[liquid < threshold] = 0
        if not mud:
            # water: the liquid layer, shaded by an embossed distance-to-edge map, in pale turquoise
            liquid8 = (liquid * 255).astype(np.int64).astype(np.uint8)
            far = cv2.distanceTransform(255 - cv2.Canny(liquid8, 50, 150), cv2.DIST_L2, 5)
            far = cv2.blur(np.minimum(far, 20), (3, 3)).astype(np.uint8)
            far = cv2.equalizeHist(far)
            emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
            far = cv2.blur(cv2.filter2D(far, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)
            shade = liquid8.astype(np.float32) * far
            top = shade.max()
            shade = shade / top * strength if top > 0 else np.zeros_like(shade)
            tint = np.array([175, 238, 238], dtype=np.float32) / 255
            out[i] = _from_unit(unit[i] + shade[..., None] * tint)
        else:
            # mud: opaque brown blobs where the smoothed liquid mask is nearly solid
            mask = (liquid > threshold).astype(np.float32)
            mask = _ndimage().gaussian_filter(mask, strength, mode="nearest", truncate=4.0)
            mask[mask < 0.8] = 0
            brown = np.array([63, 42, 20], dtype=np.float32) / 255
            out[i] = _from_unit(unit[i] * (1 - mask[..., None]) + brown * mask[..., None])
    return out


# ---------------------------------------------------------------- digital


def _hsv_edit(images: np.ndarray, channel: int, scale: float, shift: float) -> np.ndarray:
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(_unit(images), channel_axis=-1)
    hsv[..., channel] = np.clip(hsv[..., channel] * scale + shift, 0, 1)
    return _from_unit(hsv2rgb(hsv, channel_axis=-1))


def brightness(images: np.ndarray, shift: float, rngs: Generators) -> np.ndarray:
    return _hsv_edit(images, 2, 1.0, shift)


def saturate(images: np.ndarray, c: tuple[float, float], rngs: Generators) -> np.ndarray:
    return _hsv_edit(images, 1, *c)


def contrast(images: np.ndarray, factor: float, rngs: Generators) -> np.ndarray:
    unit = _unit(images)
    mean = unit.mean(axis=(1, 2), keepdims=True)  # per image and channel
    return _from_unit((unit - mean) * factor + mean)


def jpeg_compression(images: np.ndarray, quality: int, rngs: Generators) -> np.ndarray:
    from PIL import Image

    out = np.empty_like(images)
    for i, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=int(quality))
        buffer.seek(0)
        out[i] = np.asarray(Image.open(buffer).convert("RGB"))
    return out


def pixelate(images: np.ndarray, fraction: float, rngs: Generators) -> np.ndarray:
    from PIL import Image

    _, height, width, _ = images.shape
    small = (max(1, int(width * fraction)), max(1, int(height * fraction)))
    out = np.empty_like(images)
    for i, image in enumerate(images):
        pil = Image.fromarray(np.ascontiguousarray(image)).resize(small, Image.BOX).resize((width, height), Image.BOX)
        out[i] = np.asarray(pil)
    return out


def elastic_transform(images: np.ndarray, c: tuple[float, float, float], rngs: Generators) -> np.ndarray:
    import cv2

    alpha, sigma, affine = c
    _, height, width, channels = images.shape
    centre = np.float32((height, width)) // 2
    third = min(height, width) // 3
    # three anchor points around the centre, in the (first, second) order the reference uses
    anchors = np.float32([centre + third, [centre[0] + third, centre[1] - third], centre - third])
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    out = np.empty_like(images)
    for i, rng in enumerate(rngs):
        image = images[i].astype(np.float32) / 255.0
        moved = anchors + rng.uniform(-affine, affine, size=anchors.shape).astype(np.float32)
        warp = cv2.getAffineTransform(anchors, moved)
        image = cv2.warpAffine(image, warp, (width, height), borderMode=cv2.BORDER_REFLECT_101)
        if image.ndim == 2:  # OpenCV drops a singleton channel axis
            image = image[..., None]
        # smooth random displacement fields: columns first, then rows, as the reference draws them
        shift_c, shift_r = (
            (
                _ndimage().gaussian_filter(rng.uniform(-1, 1, (height, width)), sigma, mode="reflect", truncate=3)
                * alpha
            ).astype(np.float32)
            for _ in range(2)
        )
        coords = np.stack([rows + shift_r, cols + shift_c])
        warped = np.stack(
            [_ndimage().map_coordinates(image[..., k], coords, order=1, mode="reflect") for k in range(channels)],
            axis=-1,
        )
        out[i] = _from_unit(warped)
    return out


OPS: dict[str, Op] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur,
    "spatter": spatter,
    "saturate": saturate,
}

# corruptions whose result depends on random draws (the others ignore the generators)
RANDOM_OPS = frozenset(
    {
        "gaussian_noise",
        "shot_noise",
        "impulse_noise",
        "speckle_noise",
        "glass_blur",
        "motion_blur",
        "snow",
        "frost",
        "fog",
        "spatter",
        "elastic_transform",
    }
)
