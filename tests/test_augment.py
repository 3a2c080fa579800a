"""simclrv2.augment against independent references: per-pixel colorsys / numpy colour ops, PIL's
float bicubic, a direct 2-D convolution, a Python port of TF's crop sampler, and the SPEC's
distributions (tolerances from the sampling error, fixed seeds so every run is the same)."""

import colorsys
import math
import random
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from simclrv2.augment import (
    SimCLRAugment,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    center_crop,
    crop_flip,
    gaussian_blur,
    resized_crops,
    sample_crop_boxes,
    scale_brightness,
    shift_brightness,
    to_grayscale,
)
from simclrv2.errors import UserError
from simclrv2.luma import GRAY_WEIGHTS


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_floats(shape, seed: int = 0) -> torch.Tensor:
    """Floats in [0, 1] with exact grays, saturated pixels and ties mixed in."""
    x = torch.rand(shape, generator=gen(seed))
    x[:, :, 0, 0] = 0.5  # gray
    x[:, :, 0, 1] = torch.tensor([1.0, 0.0, 0.0])[: shape[1]]  # saturated, or black
    x[:, :, 0, 2] = torch.tensor([0.3, 0.3, 0.7])[: shape[1]]  # two channels tied at the min
    return x


def random_uint8(shape, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=gen(seed), dtype=torch.uint8)


def within_sampling_error(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """|observed - n p| within `sigmas` binomial standard deviations."""
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# ----------------------------------------------------------------------------- colour ops


def per_pixel(x: torch.Tensor, fn) -> torch.Tensor:
    """Apply fn(r, g, b, image_index) -> (r, g, b) to every pixel, in float64 Python."""
    out = x.double().clone()
    n, _, height, width = x.shape
    for i in range(n):
        for y in range(height):
            for z in range(width):
                out[i, :, y, z] = torch.tensor(fn(*x[i, :, y, z].double().tolist(), i))
    return out


def test_hue_equals_per_pixel_hsv_rotation():
    x = random_floats((3, 3, 6, 5))
    delta = torch.tensor([0.17, -0.2, 0.49])

    def rotate(r, g, b, i):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        return colorsys.hsv_to_rgb((h + delta[i].item()) % 1.0, s, v)

    torch.testing.assert_close(
        adjust_hue(x, delta).double(), per_pixel(x, rotate), atol=1e-5, rtol=0
    )


def test_saturation_scales_hsv_saturation_with_a_clip():
    x = random_floats((3, 3, 6, 5), seed=1)
    factor = torch.tensor([0.2, 1.0, 1.8])

    def saturate(r, g, b, i):
        h, s, v = colorsys.rgb_to_hsv(r, g, b)
        return colorsys.hsv_to_rgb(h, min(1.0, max(0.0, s * factor[i].item())), v)

    got = adjust_saturation(x, factor).double()
    torch.testing.assert_close(got, per_pixel(x, saturate), atol=1e-5, rtol=0)


def test_contrast_uses_the_mean_of_each_channel():
    x = random_floats((2, 3, 7, 4), seed=2)
    factor = torch.tensor([0.3, 1.7])
    expected = x.numpy().astype(np.float64)
    for i in range(2):
        for c in range(3):
            mean = expected[i, c].mean()
            expected[i, c] = (expected[i, c] - mean) * factor[i].item() + mean
    torch.testing.assert_close(adjust_contrast(x, factor).double(), torch.from_numpy(expected))


def test_brightness_v2_multiplies_and_v1_adds():
    x = random_floats((2, 3, 4, 4), seed=3)
    torch.testing.assert_close(scale_brightness(x, torch.tensor([0.5, 1.5]))[1], x[1] * 1.5)
    torch.testing.assert_close(shift_brightness(x, torch.tensor([0.1, -0.3]))[1], x[1] - 0.3)


def test_grayscale_uses_tf_weights_on_every_channel():
    eye = torch.eye(3)[:, :, None, None].expand(3, 3, 2, 2)  # pure red, green, blue images
    gray = to_grayscale(eye)
    for c, weight in enumerate(GRAY_WEIGHTS):
        assert torch.allclose(gray[c], torch.full((3, 2, 2), weight))
    x = random_floats((2, 3, 4, 5), seed=4)
    expected = sum(w * x[:, c] for c, w in enumerate((0.2989, 0.5870, 0.1140)))
    torch.testing.assert_close(to_grayscale(x), expected[:, None].expand(2, 3, 4, 5))


def test_colour_ops_on_one_channel():
    x = random_floats((2, 1, 5, 5), seed=5)
    factors = torch.tensor([0.4, 1.6])
    for op in (adjust_saturation, adjust_hue):
        assert torch.equal(op(x, factors), x)
    assert torch.equal(to_grayscale(x), x)
    assert not torch.allclose(adjust_contrast(x, factors), x)
    torch.testing.assert_close(scale_brightness(x, factors), x * factors[:, None, None, None])


# ----------------------------------------------------------------------------- blur


def test_blur_equals_a_direct_2d_convolution_with_zero_padding():
    x = random_floats((2, 3, 9, 11), seed=6)
    sigma = torch.tensor([0.4, 1.9])
    k = 5
    got = gaussian_blur(x, sigma, k)
    r = k // 2
    d = np.arange(-r, r + 1)
    for i in range(2):
        g1 = np.exp(-(d**2) / (2 * sigma[i].item() ** 2))
        w2 = np.outer(g1, g1) / np.outer(g1, g1).sum()  # the 2-D kernel
        padded = np.pad(x[i].numpy().astype(np.float64), ((0, 0), (r, r), (r, r)))
        expected = np.zeros((3, 9, 11))
        for dy in range(k):
            for dx in range(k):
                expected += w2[dy, dx] * padded[:, dy : dy + 9, dx : dx + 11]
        torch.testing.assert_close(got[i].double(), torch.from_numpy(expected), atol=1e-6, rtol=0)


def test_blur_kernel_follows_the_reference_size_rule():
    # the reference: kernel_size = height // 10, radius = int(kernel_size / 2), taps 2 radius + 1
    for size in (16, 28, 32, 96, 224, 225):
        assert blur_kernel_size(size) == 2 * int((size // 10) / 2) + 1
    assert blur_kernel_size(224) == 23


# ----------------------------------------------------------------------------- crop and resize


def pil_bicubic(plane: np.ndarray, size: int) -> np.ndarray:
    """PIL's float bicubic (Keys a = -0.5, half-pixel, weights renormalised inside the input)."""
    return np.asarray(Image.fromarray(plane, mode="F").resize((size, size), Image.BICUBIC))


def test_resized_crops_equal_pil_bicubic_of_the_crop_when_upsampling():
    images = random_uint8((3, 3, 20, 24), seed=7)
    boxes = torch.tensor([[0, 0, 20, 24], [3, 5, 9, 12], [11, 13, 9, 11]])  # top, left, h, w
    flip = torch.tensor([False, True, False])
    got = resized_crops(images, boxes, 25, flip)
    for i, (top, left, h, w) in enumerate(boxes.tolist()):
        crop = images[i, :, top : top + h, left : left + w].float().numpy() / 255
        for c in range(3):
            expected = pil_bicubic(crop[c], 25)
            expected = np.clip(expected[:, ::-1] if flip[i] else expected, 0, 1)
            torch.testing.assert_close(
                got[i, c], torch.from_numpy(expected.copy()), atol=1e-5, rtol=0
            )


def test_resize_reproduces_quadratics_as_keys_cubic_does():
    # Keys' a = -0.5 reproduces polynomials up to degree 2 (a = -0.75, torch's bicubic, does not)
    ramp = torch.arange(20.0)
    image = (ramp[:, None] * (ramp[:, None] + 1) / 2 + ramp[None, :]).to(torch.uint8)[None, None]
    out = resized_crops(image, torch.tensor([[0, 0, 16, 16]]), 48)[0, 0] * 255
    p = (torch.arange(48) + 0.5) / 3 - 0.5  # input coordinate of each output pixel
    expected = p[:, None] * (p[:, None] + 1) / 2 + p[None, :]
    inside = slice(5, 43)  # all four taps inside the crop
    torch.testing.assert_close(out[inside, inside], expected[inside, inside], atol=1e-3, rtol=0)


def test_unscaled_crops_are_exact_slices_and_flips():
    images = random_uint8((2, 3, 30, 30), seed=8)
    boxes = torch.tensor([[4, 7, 16, 16], [14, 0, 16, 16]])
    got = resized_crops(images, boxes, 16, torch.tensor([False, True]))
    assert torch.equal(got[0], images[0, :, 4:20, 7:23].float() / 255)
    assert torch.equal(got[1], images[1, :, 14:30, 0:16].flip(-1).float() / 255)


def test_center_crop_is_the_central_87_5_percent_and_none_at_32_px():
    images = random_uint8((2, 3, 256, 256), seed=9)
    assert torch.equal(center_crop(images, 224), images[:, :, 16:240, 16:240].float() / 255)
    small = random_uint8((4, 1, 32, 32), seed=10)
    assert torch.equal(center_crop(small, 32), small.float() / 255)
    assert center_crop(small, 28, fraction=0.875).shape == (4, 1, 28, 28)


def test_center_crop_of_a_wide_image_takes_a_central_square():
    wide = random_uint8((1, 3, 16, 40), seed=11)
    assert torch.equal(center_crop(wide, 16, fraction=1.0), wide[:, :, :, 12:28].float() / 255)


def test_crop_flip_keeps_colours_and_is_seeded():
    flat = torch.full((6, 3, 20, 20), 77, dtype=torch.uint8)
    out = crop_flip(flat, 12, gen(0))
    torch.testing.assert_close(out, torch.full((6, 3, 12, 12), 77 / 255))
    images = random_uint8((6, 3, 20, 20))
    assert torch.equal(crop_flip(images, 12, gen(1)), crop_flip(images, 12, gen(1)))
    assert not torch.equal(crop_flip(images, 12, gen(1)), crop_flip(images, 12, gen(2)))


# ----------------------------------------------------------------------------- crop statistics


def bin_counts(values: torch.Tensor, edges: np.ndarray) -> np.ndarray:
    return np.histogram(values.double().numpy(), bins=edges)[0]


def test_area_sampler_matches_uniform_area_and_log_uniform_aspect_given_the_fit():
    # Accepted (area a, log aspect l) are uniform on {a in [0.08, 1], |l| <= log 4/3, a <= e^-|l|}
    # for a square image, so a has density ~ min(log 4/3, -log a), l has density ~ e^-|l| - 0.08.
    n, side = 40_000, 2000  # a large side makes the integer rounding of the box negligible
    boxes = sample_crop_boxes(n, side, side, gen(0)).double()
    area = (boxes[:, 2] * boxes[:, 3] / side**2).clamp(0.08, 1)  # rounding strays by < 1e-3
    big = math.log(4 / 3)
    log_aspect = torch.log(boxes[:, 3] / boxes[:, 2]).clamp(-big, big)

    def area_cdf(a):  # integral of min(big, -log t) dt from 0.08
        knee = math.exp(-big)
        first = big * (min(a, knee) - 0.08)
        tail = 0.0 if a <= knee else (a - a * math.log(a)) - (knee - knee * math.log(knee))
        return first + tail

    def aspect_cdf(t):  # integral of e^-|l| - 0.08 from -big
        f = lambda u: (math.exp(u) if u < 0 else 2 - math.exp(-u)) - 0.08 * u  # noqa: E731
        return f(t) - f(-big)

    for values, cdf, edges in [
        (area, area_cdf, np.linspace(0.08, 1, 11)),
        (log_aspect, aspect_cdf, np.linspace(-big, big, 11)),
    ]:
        total = cdf(edges[-1])
        counts = bin_counts(values, edges)
        assert counts.sum() == n
        for count, low, high in zip(counts, edges[:-1], edges[1:]):
            assert within_sampling_error(count, n, (cdf(high) - cdf(low)) / total)


def tf_generate_random_crop(rng: random.Random, width: int, height: int) -> tuple[int, int]:
    """TF's sample_distorted_bounding_box as the reference calls it, one image, plain Python:
    (h, w) of the crop, aspect in [3/4, 4/3], area in [0.08, 1], covering at least 10%."""
    for _ in range(100):
        aspect = 3 / 4 + rng.random() * (4 / 3 - 3 / 4)
        min_area, max_area = 0.08 * width * height, 1.0 * width * height
        h = round(math.sqrt(min_area / aspect))
        max_h = round(math.sqrt(max_area / aspect))
        if round(max_h * aspect) > width:
            max_h = int((width + 0.5 - 1e-7) / aspect)
            if round(max_h * aspect) > width:
                max_h -= 1
        max_h = min(max_h, height)
        h = min(h, max_h)
        if h < max_h:
            h += rng.randrange(max_h - h + 1)
        w = round(h * aspect)
        if w * h < min_area:
            h += 1
            w = round(h * aspect)
        if w * h > max_area:
            h -= 1
            w = round(h * aspect)
        ok = min_area <= w * h <= max_area and 0 < w <= width and 0 < h <= height
        if ok and w * h >= 0.1 * width * height:
            return h, w
    return height, width


def test_tf_sampler_matches_a_port_of_the_tf_kernel():
    n, height, width = 20_000, 96, 120
    rng = random.Random(0)
    port = torch.tensor([tf_generate_random_crop(rng, width, height) for _ in range(n)]).double()
    boxes = sample_crop_boxes(n, height, width, gen(0), sampler="tf")
    ours = boxes[:, 2:].double()
    assert (ours[:, 0] * ours[:, 1] / (height * width) >= 0.1 - 1e-9).all()
    assert ((boxes[:, 0] + boxes[:, 2] <= height) & (boxes[:, 1] + boxes[:, 3] <= width)).all()
    for column, edges in [(0, np.linspace(0, height, 13)), (1, np.linspace(0, width, 13))]:
        expected = bin_counts(port[:, column], edges) / n
        for count, p in zip(bin_counts(ours[:, column], edges), expected):
            # two samples of n: the difference has twice the variance of one
            assert abs(count - n * p) <= 5 * math.sqrt(2 * n * p * (1 - p)) + 2


@pytest.mark.parametrize(("sampler", "positions"), [("area", 6), ("tf", 5)])
def test_crop_offsets_are_uniform_over_positions(sampler, positions):
    # a 5 x 5 box fits at 6 positions per axis in 10 x 10; TF's kernel never draws the last one
    n = 30_000
    boxes = sample_crop_boxes(n, 10, 10, gen(3), (0.25, 0.25), (1.0, 1.0), sampler)
    assert (boxes[:, 2:] == 5).all()
    for column in (0, 1):
        counts = torch.bincount(boxes[:, column], minlength=positions)
        assert len(counts) == positions
        assert all(within_sampling_error(c, n, 1 / positions) for c in counts.tolist())


def test_crops_that_never_fit_fall_back_to_a_centre_crop():
    boxes = sample_crop_boxes(5, 10, 30, gen(0), scale=(1.0, 1.0))  # aspect 3 > 4/3: never fits
    assert boxes.tolist() == [[0, 8, 10, 13]] * 5  # 13 = round(10 * 4/3) wide, centred


# ----------------------------------------------------------------------------- the SimCLR view


def test_view_parameters_follow_the_spec_probabilities_and_ranges():
    n = 20_000
    augment = SimCLRAugment(size=224, jitter_strength=1.0)
    params = augment.sample(n, 256, 256, gen(0))
    for flags, p in [
        (params.flip, 0.5),
        (params.jitter, 0.8),
        (params.grayscale, 0.2),
        (params.blur, 0.5),
    ]:
        assert within_sampling_error(int(flags.sum()), n, p)
    for position in range(4):  # each op is equally likely at each step of the random order
        counts = torch.bincount(params.order[:, position], minlength=4)
        assert all(within_sampling_error(c, n, 1 / 4) for c in counts.tolist())
    assert (params.order.sort(dim=1).values == torch.arange(4)).all()
    ranges = [(0.2, 1.8), (0.2, 1.8), (0.2, 1.8), (-0.2, 0.2)]  # 0.8 s and 0.2 s at s = 1
    for column, (low, high) in enumerate(ranges):
        values = params.factors[:, column]
        assert low <= values.min() < low + 0.01 and high - 0.01 < values.max() <= high
    assert 0.1 <= params.sigma.min() < 0.11 and 1.99 < params.sigma.max() <= 2.0
    v1 = replace(augment, brightness="v1", jitter_strength=0.5).sample(n, 256, 256, gen(0))
    assert -0.4 <= v1.factors[:, 0].min() < -0.39 and 0.39 < v1.factors[:, 0].max() <= 0.4
    assert not SimCLRAugment(size=32, blur=False).sample(100, 32, 32, gen(0)).blur.any()


def test_views_show_grayscale_and_flip_at_their_rates():
    n = 4000
    images = random_uint8((n, 3, 8, 8), seed=12)
    gray_views = SimCLRAugment(size=8, blur=False)(images, gen(0))
    is_gray = (gray_views.amax(dim=1) == gray_views.amin(dim=1)).flatten(1).all(dim=1)
    assert within_sampling_error(int(is_gray.sum()), n, 0.2)
    crop_only = SimCLRAugment(size=8, crop_scale=(1, 1), jitter_p=0, grayscale_p=0, blur=False)
    flipped = (crop_only(images, gen(1)) != images.float() / 255).flatten(1).any(dim=1)
    assert within_sampling_error(int(flipped.sum()), n, 0.5)


def test_apply_follows_the_sampled_order_with_a_clip_after_each_op():
    images = random_uint8((2, 3, 40, 40), seed=13)
    augment = SimCLRAugment(size=40)
    params = augment.sample(2, 40, 40, gen(0))
    params = replace(
        params,
        boxes=torch.tensor([[0, 0, 40, 40]] * 2),
        flip=torch.tensor([False, False]),
        jitter=torch.tensor([True, True]),
        order=torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]]),
        factors=torch.tensor([[1.7, 0.6, 1.5, 0.1], [1.7, 0.6, 1.5, 0.1]]),
        grayscale=torch.tensor([False, True]),
        blur=torch.tensor([True, False]),
    )
    got = augment.apply(images, params)
    x = images.float() / 255
    ops = [scale_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    for i in range(2):
        expected = x[i : i + 1]
        for op in params.order[i].tolist():
            expected = ops[op](expected, params.factors[i : i + 1, op]).clamp(0, 1)
        if params.grayscale[i]:
            expected = to_grayscale(expected)
        if params.blur[i]:
            expected = gaussian_blur(expected, params.sigma[i : i + 1], 5).clamp(0, 1)
        torch.testing.assert_close(got[i : i + 1], expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("brightness", ["v2", "v1"])
def test_the_blend_that_reads_nothing_back_equals_the_subset_path(channels, brightness):
    """The GPU path (every op on the whole batch, kept where its mask holds) against the CPU's
    (each op on its images only), on the CPU; the CPU's default is the subset path, bit for bit."""
    images = random_uint8((24, channels, 36, 36), seed=15)
    augment = SimCLRAugment(size=32, brightness=brightness, blur=True)
    params = augment.sample(24, 36, 36, gen(6))
    assert params.jitter.any() and not params.jitter.all() and params.blur.any()
    subset = augment.apply(images, params, subset=True)
    torch.testing.assert_close(
        augment.apply(images, params, subset=False), subset, atol=1e-6, rtol=0
    )
    assert torch.equal(augment.apply(images, params), subset)


@pytest.mark.parametrize("channels", [1, 3])
def test_views_are_float_in_range_shaped_and_reproducible(channels):
    images = random_uint8((16, channels, 28, 28), seed=14)
    images[0] = 0
    images[1] = 255
    augment = SimCLRAugment.reference(28)
    views = augment(images, gen(5))
    assert views.dtype == torch.float32 and views.shape == (16, channels, 28, 28)
    assert views.min() >= 0 and views.max() <= 1
    assert torch.equal(views, augment(images, gen(5)))
    g = gen(5)
    assert not torch.equal(augment(images, g), augment(images, g))  # two independent views
    bigger = SimCLRAugment(size=40)(images, gen(0))
    assert bigger.shape == (16, channels, 40, 40)


def test_views_inside_a_bf16_autocast_region_are_the_float32_views():
    """Training steps augment under autocast; the views must not be rounded (nor fail)."""
    images = random_uint8((8, 3, 40, 40), seed=3)
    augment = SimCLRAugment(size=32, blur=True)
    want_views, want_crops = augment(images, gen(1)), crop_flip(images, 24, gen(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        views, crops = augment(images, gen(1)), crop_flip(images, 24, gen(2))
        centre = center_crop(images, 24)
    assert views.dtype == crops.dtype == centre.dtype == torch.float32
    assert torch.equal(views, want_views) and torch.equal(crops, want_crops)
    assert torch.equal(centre, center_crop(images, 24))


def test_reference_recipes():
    assert SimCLRAugment.reference(32) == SimCLRAugment(size=32, jitter_strength=0.5, blur=False)
    assert SimCLRAugment.reference(224) == SimCLRAugment(size=224, jitter_strength=1.0, blur=True)


@pytest.mark.parametrize(
    "bad",
    [
        {"jitter_strength": 1.5},
        {"jitter_p": 1.2},
        {"crop_scale": (0.5, 0.1)},
        {"crop_ratio": (0.0, 1.0)},
        {"blur_sigma": (0.0, 1.0)},
        {"size": 0},
        {"brightness": "v3"},
        {"crop_sampler": "torchvision"},
    ],
)
def test_invalid_parameters_are_named(bad):
    with pytest.raises(UserError, match=next(iter(bad))):
        SimCLRAugment(**{"size": 32, **bad})


def test_non_uint8_input_is_refused():
    with pytest.raises(UserError, match="uint8"):
        SimCLRAugment(size=8)(torch.rand(2, 3, 8, 8), gen(0))
