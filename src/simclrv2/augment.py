r"""SimCLR's augmentation on whole batches, on whatever device holds them (SimCLR App. A).

Every function is pure: it takes a uint8 batch (N, C, H, W) with C = 1 or 3 and, where it draws,
a ``torch.Generator`` on the batch's device, and returns float32 (N, C, size, size) in [0, 1]
without mean/std normalisation (the reference applies none). Every image and every call draws
its own parameters; the same generator state gives the same output (bit for bit on CPU).

Public names:

- :class:`SimCLRAugment`: the pretraining view (frozen dataclass of parameters, call it twice for
  two views); :meth:`SimCLRAugment.reference` gives the authors' ImageNet or CIFAR-10 recipe.
  ``sample`` draws :class:`ViewParams` and ``apply`` renders them, for inspection and tests.
- :func:`crop_flip`: random resized crop + horizontal flip only (fine-tuning and distillation).
- :func:`center_crop`: evaluation crop (87.5% of the shorter side above 32 px, none at 32 px).
- :func:`sample_crop_boxes`, :func:`resized_crops`: the crop sampler and the batched
  crop + flip + bicubic resize.
- Colour ops at given per-image parameters: :func:`scale_brightness` (v2),
  :func:`shift_brightness` (v1), :func:`adjust_contrast`, :func:`adjust_saturation`,
  :func:`adjust_hue`, :func:`to_grayscale`; and :func:`gaussian_blur`, :func:`blur_kernel_size`.

Semantics follow the authors' TF2 ``data_util.py`` and the TF kernels it calls:

- Crop: ``crop_sampler="area"`` (default, SPEC and the paper) draws the area fraction
  U(crop_scale) and a log-uniform aspect ratio in ``crop_ratio``, up to 100 attempts, else a centre
  crop with the aspect clamped into ``crop_ratio``. ``crop_sampler="tf"`` reproduces
  ``tf.image.sample_distorted_bounding_box`` as the reference calls it: aspect uniform (not
  log-uniform), the crop HEIGHT uniform between the area bounds (so the area is not uniform),
  crops under 10% of the image rejected (``min_object_covered=0.1``), top-left offsets uniform
  over all positions but the last, and the whole image after 100 failures.
- Resize: TF2 ``tf.image.resize(..., BICUBIC)``: Keys cubic (a = -0.5), half-pixel centres, taps
  outside the crop get zero weight and the rest are renormalised, no antialiasing. Exact weights
  (TF tabulates the kernel in steps of 1/1024: differences below 1e-3, a fifth of a grey
  level). Crop, flip and resize are one pair of per-image resampling matrices applied by batched
  matmul, which is exact and runs on BLAS; ``grid_sample`` would sample outside the crop and has
  only a = -0.75. The result is clipped to [0, 1] at once (the reference clips only after the
  first colour op).
- Colour jitter of strength s, with probability ``jitter_p``: brightness, contrast, saturation
  and hue in a random order per image, clipped to [0, 1] after each. Brightness ``"v2"``
  multiplies by U(max(0, 1 - 0.8s), 1 + 0.8s), ``"v1"`` adds U(-0.8s, 0.8s). Contrast is
  ``tf.image.adjust_contrast``: (x - mean) * f + mean with the mean of EACH CHANNEL of the
  image (not of its grayscale), f ~ U(1 - 0.8s, 1 + 0.8s). Saturation is
  ``tf.image.adjust_saturation``: HSV saturation times f ~ U(1 - 0.8s, 1 + 0.8s), clipped to
  [0, 1] (not a blend with grayscale). Hue is ``tf.image.adjust_hue``: HSV hue plus
  U(-0.2s, 0.2s) turns, modulo 1. The reference needs 0.8s <= 1, so s <= 1.25.
- Grayscale with probability ``grayscale_p``, independently of the jitter:
  0.2989 R + 0.5870 G + 0.1140 B (``tf.image.rgb_to_grayscale``), copied to the three channels.
- Blur with probability ``blur_p``: separable Gaussian, sigma ~ U(0.1, 2.0) PER IMAGE (the
  reference's batch path draws one sigma per batch), kernel 2 * ((size // 10) // 2) + 1 taps,
  zero padding ("SAME"), then clipped. The reference's CIFAR-10 recipe turns it off.
- One channel (e.g. Fashion-MNIST): brightness and contrast apply; saturation, hue and
  grayscale are identities (a gray image has no saturation or hue). The reference supports RGB
  only.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial, wraps
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from simclrv2.errors import UserError

SCALE = (0.08, 1.0)  # crop area fraction range (SimCLR App. A)
RATIO = (3 / 4, 4 / 3)  # crop aspect ratio (width / height) range (SimCLR App. A)
MAX_ATTEMPTS = 100  # crop attempts before the fallback, as the reference
TF_MIN_COVERED = 0.1  # the reference's min_object_covered: crops below 10% of the image fail
EVAL_CROP = 0.875  # centre-crop fraction for evaluation above 32 px (reference CROP_PROPORTION)
GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # tf.image.rgb_to_grayscale
KEYS_A = -0.5  # Keys cubic coefficient of TF2's half-pixel bicubic resize
# On the CPU views are rendered about 8 MB of floats at a time: a fresh allocation of tens of MB
# costs a page fault per 4 kB (about 0.7 ms per MB on a 2-core VM), which made whole-batch
# rendering at 224 px three times slower; much smaller chunks multiply the ops instead.
CPU_CHUNK_ELEMENTS = 2**21

CropSampler = Literal["area", "tf"]


# ----------------------------------------------------------------------------- crop and resize


def _outside_autocast(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run ``function`` in float32 inside an autocast region too: augmentation makes the network's
    input, which must not be rounded to bf16/fp16 on the way (training steps run under autocast)."""

    @wraps(function)
    def float32_function(*args, **kwargs) -> Tensor:
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return function(*args, **kwargs)

    return float32_function


def _randint(generator: torch.Generator, high: Tensor) -> Tensor:
    """Uniform integers in [0, high) per element (high >= 1), from one uniform draw each."""
    u = torch.rand(high.shape, generator=generator, device=high.device)
    return torch.minimum((u * high).long(), high - 1)


def _first_success(ok: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Per row of (N, attempts): the value at the first True of ``ok`` and whether any was True."""
    first = ok.int().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    return values.gather(1, first).squeeze(1), ok.any(dim=1)


def _area_boxes(
    n: int, height: int, width: int, scale, ratio, generator: torch.Generator, device
) -> tuple[Tensor, Tensor, Tensor]:
    """SPEC sampler: (h, w, success) per image; area U(scale), log-uniform aspect."""
    shape = (n, MAX_ATTEMPTS)
    area = height * width * torch.empty(shape, device=device).uniform_(*scale, generator=generator)
    log_ratio = torch.empty(shape, device=device).uniform_(
        math.log(ratio[0]), math.log(ratio[1]), generator=generator
    )
    aspect = torch.exp(log_ratio)
    w = torch.sqrt(area * aspect).round().long()
    h = torch.sqrt(area / aspect).round().long()
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    h, found = _first_success(ok, h)
    w, _ = _first_success(ok, w)
    # fallback: centre crop of the whole image with its aspect clamped into `ratio`
    image_aspect = width / height
    if image_aspect < ratio[0]:
        fallback_w, fallback_h = width, round(width / ratio[0])
    elif image_aspect > ratio[1]:
        fallback_w, fallback_h = round(height * ratio[1]), height
    else:
        fallback_w, fallback_h = width, height
    h = torch.where(found, h, fallback_h)
    w = torch.where(found, w, fallback_w)
    return h, w, found


def _tf_boxes(
    n: int, height: int, width: int, scale, ratio, generator: torch.Generator, device
) -> tuple[Tensor, Tensor, Tensor]:
    """``sample_distorted_bounding_box`` (its GenerateRandomCrop), all attempts at once."""
    shape = (n, MAX_ATTEMPTS)
    aspect = torch.empty(shape, device=device).uniform_(*ratio, generator=generator)
    min_area, max_area = scale[0] * height * width, scale[1] * height * width
    h = torch.sqrt(min_area / aspect).round().long()
    max_h = torch.sqrt(max_area / aspect).round().long()
    too_wide = (max_h * aspect).round() > width  # largest height whose rounded width fits
    fitted = ((width + 0.5 - 1e-7) / aspect).long()
    fitted = fitted - ((fitted * aspect).round() > width).long()
    max_h = torch.where(too_wide, fitted, max_h).clamp(max=height)
    h = torch.minimum(h, max_h)
    h = h + _randint(generator, (max_h - h + 1).clamp(min=1))  # uniform in [h, max_h]
    w = (h * aspect).round().long()
    small = w * h < min_area  # the kernel's rounding repairs: one step up, then one down
    h = h + small.long()
    w = torch.where(small, (h * aspect).round().long(), w)
    large = w * h > max_area
    h = h - large.long()
    w = torch.where(large, (h * aspect).round().long(), w)
    area = w * h
    ok = (area >= min_area) & (area <= max_area) & (w <= width) & (h <= height)
    ok &= (w > 0) & (h > 0) & (area.float() / (height * width) >= TF_MIN_COVERED)  # as TF, fp32
    h, found = _first_success(ok, h)
    w, _ = _first_success(ok, w)
    return torch.where(found, h, height), torch.where(found, w, width), found


def sample_crop_boxes(
    n: int,
    height: int,
    width: int,
    generator: torch.Generator,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
    sampler: CropSampler = "area",
) -> Tensor:
    """Random crop boxes for n images of height x width: (n, 4) int64 rows (top, left, h, w).

    ``sampler`` is "area" (SPEC) or "tf" (the reference's sample_distorted_bounding_box); see the
    module docstring. Offsets are uniform over the positions where the box fits ("tf": all but
    the last, as TF's kernel), and centred for the "area" sampler's fallback crop.
    """
    device = generator.device
    draw = {"area": _area_boxes, "tf": _tf_boxes}[sampler]
    h, w, found = draw(n, height, width, scale, ratio, generator, device)
    positions_y, positions_x = height - h + 1, width - w + 1
    if sampler == "tf":  # TF's Uniform(height - h) never yields the last position
        positions_y, positions_x = (positions_y - 1).clamp(min=1), (positions_x - 1).clamp(min=1)
    top = torch.where(found, _randint(generator, positions_y), (height - h) // 2)
    left = torch.where(found, _randint(generator, positions_x), (width - w) // 2)
    return torch.stack([top, left, h, w], dim=1)


def _keys_cubic(t: Tensor) -> Tensor:
    """Keys cubic convolution kernel with a = -0.5 at distances t (any sign)."""
    t = t.abs()
    near = ((KEYS_A + 2) * t - (KEYS_A + 3)) * t * t + 1
    far = ((KEYS_A * t - 5 * KEYS_A) * t + 8 * KEYS_A) * t - 4 * KEYS_A
    return torch.where(t <= 1, near, torch.where(t < 2, far, torch.zeros_like(t)))


def _resampling_matrix(
    start: Tensor, length: Tensor, in_size: int, out_size: int, flip: Tensor | None = None
) -> Tensor:
    """(N, out_size, in_size) matrices resizing the span [start, start + length) of each row,
    with the output order reversed where ``flip`` (N,) is True.

    TF2 bicubic: output sample i reads position (i + 0.5) * length / out_size - 0.5 of the span;
    the four taps outside the span get zero weight and the others are renormalised.
    """
    i = torch.arange(out_size, device=start.device, dtype=torch.float32).expand(len(start), -1)
    if flip is not None:
        i = torch.where(flip[:, None], out_size - 1 - i, i)
    position = (i + 0.5) * (length[:, None] / out_size) - 0.5  # (N, out) in span coordinates
    base = position.floor()
    taps = base[..., None] + torch.arange(-1, 3, device=start.device)  # (N, out, 4)
    weights = _keys_cubic(position[..., None] - taps)
    weights = weights * ((taps >= 0) & (taps < length[:, None, None]))
    weights = weights / weights.sum(dim=-1, keepdim=True)
    columns = (start[:, None, None] + taps.long()).clamp(0, in_size - 1)
    matrix = torch.zeros(start.shape[0], out_size, in_size, device=start.device)
    return matrix.scatter_add_(2, columns, weights)


@_outside_autocast
def resized_crops(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Crop each image to its box, flip it left-right where ``flip``, resize it to size x size.

    ``images``: uint8 (N, C, H, W); ``boxes``: (N, 4) int (top, left, h, w); ``flip``: (N,) bool.
    Returns float32 (N, C, size, size) in [0, 1]. Bicubic as TF2 (module docstring).
    """
    _check_images(images)
    n, c, height, width = images.shape
    # Rows are made the outer axis, so each resampling product is ONE matrix per image over all
    # channels, with no broadcast copies: (size, H) @ (H, C*W), then (size*C, W) @ (W, size).
    x = torch.empty(n, height, c, width, device=images.device)
    x.copy_(images.permute(0, 2, 1, 3))  # the uint8 -> float32 conversion, in that layout
    rows = _resampling_matrix(boxes[:, 0], boxes[:, 2], height, size)  # (N, size, H)
    cols = _resampling_matrix(boxes[:, 1], boxes[:, 3], width, size, flip)  # (N, size, W)
    x = torch.bmm(rows, x.view(n, height, c * width))  # (N, size, C*W)
    x = torch.bmm(x.view(n, size * c, width), cols.transpose(1, 2))  # (N, size*C, size)
    out = torch.empty(n, c, size, size, device=images.device)
    return out.copy_(x.view(n, size, c, size).permute(0, 2, 1, 3)).clamp_(0, 255).div_(255)


def crop_flip(
    images: Tensor,
    size: int,
    generator: torch.Generator,
    crop_scale: tuple[float, float] = SCALE,
    crop_ratio: tuple[float, float] = RATIO,
    flip_p: float = 0.5,
    crop_sampler: CropSampler = "area",
) -> Tensor:
    """Random resized crop and horizontal flip only: the augmentation of fine-tuning and
    distillation (SimCLRv2, Sec. 3). uint8 (N, C, H, W) -> float32 (N, C, size, size) in [0, 1].
    """
    n, _, height, width = images.shape
    boxes = sample_crop_boxes(n, height, width, generator, crop_scale, crop_ratio, crop_sampler)
    flip = torch.rand(len(images), generator=generator, device=generator.device) < flip_p
    return resized_crops(images, boxes, size, flip)


def center_crop(images: Tensor, size: int, fraction: float | None = None) -> Tensor:
    """Evaluation view: central square of ``fraction`` of the shorter side, resized to size.

    ``fraction=None`` follows the reference: 0.875 when ``size`` > 32, else 1.0 (no crop; a
    size x size input then comes back unchanged, only converted to floats in [0, 1]).
    """
    if fraction is None:
        fraction = EVAL_CROP if size > 32 else 1.0
    n, _, height, width = images.shape
    side = round(fraction * min(height, width))  # TF's _compute_crop_shape for a square output
    box = torch.tensor([(height - side + 1) // 2, (width - side + 1) // 2, side, side])
    return resized_crops(images, box.to(images.device).expand(n, 4), size)


# ----------------------------------------------------------------------------- colour


def _per_image(values: Tensor) -> Tensor:
    return values.to(torch.float32)[:, None, None, None]  # (N,) -> (N, 1, 1, 1)


def scale_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """SimCLRv2 brightness: x * factor, per image. x: (N, C, H, W) floats; factor: (N,)."""
    return x * _per_image(factor)


def shift_brightness(x: Tensor, delta: Tensor) -> Tensor:
    """SimCLR v1 brightness (``tf.image.adjust_brightness``): x + delta, per image."""
    return x + _per_image(delta)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """``tf.image.adjust_contrast``: (x - m) * factor + m, m the mean of each channel of each image."""
    mean = x.mean(dim=(2, 3), keepdim=True)  # (N, C, 1, 1)
    return (x - mean).mul_(_per_image(factor)).add_(mean)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """``tf.image.adjust_saturation``: HSV saturation times factor, clipped to [0, 1].

    With V = max and S = (max - min) / max, scaling S by f moves every channel to V - f (V - x)
    (hue and value unchanged), so the HSV round trip reduces to that, with f capped at 1 / S
    where the clip to S = 1 binds. Identity on one channel.
    """
    if x.shape[1] == 1:
        return x
    value = x.amax(dim=1, keepdim=True)  # (N, 1, H, W)
    spread = value - x.amin(dim=1, keepdim=True)
    f = (value / spread.clamp_min_(1e-12)).clamp_(max=_per_image(factor))
    return (value - x).mul_(f).neg_().add_(value)


def adjust_hue(x: Tensor, delta: Tensor) -> Tensor:
    """``tf.image.adjust_hue``: HSV hue plus ``delta`` turns (N,), modulo 1. Identity on 1 channel.

    Branch-free (no ``where`` or comparisons, several times faster on CPU): the hue in sextants
    from the max channel (ties to the first, as TF), plus the shift; then HSV -> RGB as
    min + chroma * clip(d - 1, 0, 1), with d the distance of hue + n (n = 3, 1, -1 for R, G, B)
    to the nearest multiple of 6 (a triangle wave, unrolled as nested absolute values).
    """
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(dim=1)  # (N, H, W) each
    value = torch.maximum(torch.maximum(r, g), b)
    low = torch.minimum(torch.minimum(r, g), b)
    chroma = value - low
    red = torch.sub(value, r).sign_().neg_().add_(1)  # 1 where red is the max, else 0
    green = torch.sub(value, g).sign_().sub_(1).mul_(red - 1)  # 1 where green is the first max
    blue = 1 - red - green
    hue = (red * (g - b)).add_(green * (b - r)).add_(blue * (r - g)).div_(chroma.clamp_min(1e-12))
    shift = delta.to(torch.float32).mul(6).remainder_(6)  # (N,) in sextants, in [0, 6)
    hue.add_(green.mul_(2)).add_(blue.mul_(4)).add_(shift[:, None, None])  # in [-1, 11)
    # for t = hue + n - 6 in [-8, 8], |||t| - 3| - 3| is the distance of hue + n to {0, 6, 12}
    offsets = torch.tensor([-3.0, -5.0, -7.0], device=x.device)[:, None, None]
    distance = (hue[:, None] + offsets).abs_().sub_(3).abs_().sub_(3).abs_()  # (N, 3, H, W)
    return distance.sub_(1).clamp_(0, 1).mul_(chroma[:, None]).add_(low[:, None])


def to_grayscale(x: Tensor) -> Tensor:
    """``tf.image.rgb_to_grayscale`` copied to every channel. Identity on one channel."""
    if x.shape[1] == 1:
        return x
    w_r, w_g, w_b = GRAY_WEIGHTS
    gray = (x[:, 0] * w_r).add_(x[:, 1], alpha=w_g).add_(x[:, 2], alpha=w_b)  # (N, H, W)
    return gray[:, None].repeat(1, x.shape[1], 1, 1)


# ----------------------------------------------------------------------------- blur


def blur_kernel_size(size: int) -> int:
    """Taps of the reference's blur for a size x size image: size // 10 made odd (23 at 224 px)."""
    return 2 * ((size // 10) // 2) + 1


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` (N,) in pixels and zero padding.

    x: (N, C, H, W) floats; ``kernel_size`` odd. Each image's kernel is exp(-d^2 / (2 sigma^2))
    over d = -r..r, normalised to sum 1; one grouped conv per axis.
    """
    n, c, height, width = x.shape
    radius = kernel_size // 2
    d = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    kernel = torch.exp(-(d**2) / (2 * sigma.to(torch.float32)[:, None] ** 2))  # (N, k)
    kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, k)
    # channels-last: oneDNN's depthwise convolution is several times faster in that layout
    planes = x.reshape(1, n * c, height, width).contiguous(memory_format=torch.channels_last)
    planes = F.conv2d(planes, kernel[:, None, None, :], padding=(0, radius), groups=n * c)
    planes = F.conv2d(planes, kernel[:, None, :, None], padding=(radius, 0), groups=n * c)
    return planes.reshape(n, c, height, width)


# ----------------------------------------------------------------------------- the SimCLR view


@dataclass(frozen=True)
class ViewParams:
    """Every random choice of one batch of views, one row per image (from SimCLRAugment.sample)."""

    boxes: Tensor  # (N, 4) int64: crop top, left, height, width in input pixels
    flip: Tensor  # (N,) bool
    jitter: Tensor  # (N,) bool: colour jitter applied
    order: Tensor  # (N, 4) int64: a permutation of the ops 0..3 = brightness, contrast, sat., hue
    factors: Tensor  # (N, 4) float32: brightness factor (v2) or shift (v1), contrast and
    # saturation factors, hue shift in turns
    grayscale: Tensor  # (N,) bool
    blur: Tensor  # (N,) bool
    sigma: Tensor  # (N,) float32: blur sigma in output pixels

    def __getitem__(self, index: slice | Tensor) -> ViewParams:
        """The parameters of a subset of the images."""
        return ViewParams(*(getattr(self, f.name)[index] for f in fields(self)))


@dataclass(frozen=True)
class SimCLRAugment:
    """SimCLR's pretraining augmentation (SimCLR App. A; SimCLRv2 keeps it), as parameters.

    ``augment(images_uint8, generator)`` returns one float view per image; the pretraining step
    calls it twice. Defaults are the reference's ImageNet recipe; its CIFAR-10 recipe is
    ``jitter_strength=0.5, blur=False`` (see :meth:`reference`). Semantics: module docstring.
    """

    size: int  # output side in pixels (224 ImageNet; 32 or 28 px data at its own size)
    crop_scale: tuple[float, float] = SCALE  # crop area fraction range
    crop_ratio: tuple[float, float] = RATIO  # crop aspect (width / height) range
    crop_sampler: CropSampler = "area"  # "tf": the reference's sample_distorted_bounding_box
    flip_p: float = 0.5
    jitter_strength: float = 1.0  # colour jitter strength s: 1.0 ImageNet, 0.5 CIFAR-10
    jitter_p: float = 0.8
    brightness: Literal["v2", "v1"] = "v2"  # v2 multiplies, v1 adds
    grayscale_p: float = 0.2
    blur: bool = True  # off in the reference's CIFAR-10 recipe
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)  # pixels of the output

    def __post_init__(self) -> None:
        probabilities = {
            "flip_p": self.flip_p,
            "jitter_p": self.jitter_p,
            "grayscale_p": self.grayscale_p,
            "blur_p": self.blur_p,
        }
        problems = [
            f"{k} must be in [0, 1], got {v}" for k, v in probabilities.items() if not 0 <= v <= 1
        ]
        if self.size < 1:
            problems.append(f"size must be at least 1, got {self.size}")
        if not 0 < self.crop_scale[0] <= self.crop_scale[1] <= 1:
            problems.append(f"crop_scale must satisfy 0 < low <= high <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            problems.append(f"crop_ratio must satisfy 0 < low <= high, got {self.crop_ratio}")
        if not 0 <= self.jitter_strength <= 1.25:
            problems.append(
                f"jitter_strength must be in [0, 1.25] (0.8 s <= 1 as the reference), got {self.jitter_strength}"
            )
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            problems.append(f"blur_sigma must satisfy 0 < low <= high, got {self.blur_sigma}")
        if self.crop_sampler not in ("area", "tf"):
            problems.append(f"crop_sampler must be 'area' or 'tf', got {self.crop_sampler!r}")
        if self.brightness not in ("v1", "v2"):
            problems.append(f"brightness must be 'v1' or 'v2', got {self.brightness!r}")
        if problems:
            raise UserError("SimCLRAugment: " + "; ".join(problems))

    @classmethod
    def reference(cls, size: int) -> SimCLRAugment:
        """The authors' recipe for this output size: CIFAR-10's (s = 0.5, no blur) at 32 px or
        less, ImageNet's (s = 1.0, blur) above."""
        small = size <= 32
        return cls(size=size, jitter_strength=0.5 if small else 1.0, blur=not small)

    def sample(self, n: int, height: int, width: int, generator: torch.Generator) -> ViewParams:
        """Draw every random choice for n views of height x width images, in a fixed order."""
        device = generator.device

        def uniform(low: float, high: float) -> Tensor:
            return torch.empty(n, device=device).uniform_(low, high, generator=generator)

        def coin(p: float) -> Tensor:
            return torch.rand(n, generator=generator, device=device) < p

        boxes = sample_crop_boxes(
            n, height, width, generator, self.crop_scale, self.crop_ratio, self.crop_sampler
        )
        flip = coin(self.flip_p)
        jitter = coin(self.jitter_p)
        order = torch.rand(n, 4, generator=generator, device=device).argsort(dim=1)
        b, c, s, h = (
            0.8 * self.jitter_strength,
            0.8 * self.jitter_strength,
            0.8 * self.jitter_strength,
            0.2 * self.jitter_strength,
        )
        brightness = uniform(max(0.0, 1 - b), 1 + b) if self.brightness == "v2" else uniform(-b, b)
        factors = torch.stack(
            [brightness, uniform(1 - c, 1 + c), uniform(1 - s, 1 + s), uniform(-h, h)], 1
        )
        grayscale = coin(self.grayscale_p)
        blur = coin(self.blur_p) & self.blur  # drawn even when off: same stream either way
        sigma = uniform(*self.blur_sigma)
        return ViewParams(boxes, flip, jitter, order, factors, grayscale, blur, sigma)

    @_outside_autocast
    def apply(self, images: Tensor, params: ViewParams) -> Tensor:
        """Render the views ``params`` describes: uint8 (N, C, H, W) -> float32 (N, C, size, size).

        Each op runs once per step of the random order on the images that take it there (16
        subsets for the jitter), a CPU chunk at a time; the op count stays in the hundreds, which
        matters on a busy CPU where every multi-threaded op can wait for a descheduled thread.
        """
        n, c = images.shape[:2]
        chunk = max(1, CPU_CHUNK_ELEMENTS // (c * self.size**2)) if images.is_cpu else n
        if chunk >= n:
            return self._render(images, params)
        views = torch.empty(n, c, self.size, self.size)
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            views[part] = self._render(images[part], params[part])
        return views

    def _render(self, images: Tensor, params: ViewParams) -> Tensor:
        x = resized_crops(images, params.boxes, self.size, params.flip)
        brightness = scale_brightness if self.brightness == "v2" else shift_brightness
        ops = (brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for step in range(4):
            for index, op in enumerate(ops):
                chosen = params.jitter & (params.order[:, step] == index)
                _apply_where(x, chosen, op, params.factors[:, index])
        _apply_where(x, params.grayscale, to_grayscale)
        blur = partial(gaussian_blur, kernel_size=blur_kernel_size(self.size))
        _apply_where(x, params.blur, blur, params.sigma)
        return x

    def __call__(self, images: Tensor, generator: torch.Generator) -> Tensor:
        """One augmented view of every image: uint8 (N, C, H, W) -> float32 (N, C, size, size)."""
        _check_images(images)
        return self.apply(images, self.sample(len(images), *images.shape[2:], generator))


def _apply_where(x: Tensor, mask: Tensor, op: Callable[..., Tensor], *per_image: Tensor) -> None:
    """In place: x[i] = clip(op(x[i], *(p[i] for p in per_image))) for the images where mask (N,)."""
    index = mask.nonzero().squeeze(1)
    if len(index):
        chosen = op(x.index_select(0, index), *(p[index] for p in per_image))
        x.index_copy_(0, index, chosen.clamp_(0, 1))  # both far faster than x[index] on CPU


def _check_images(images: Tensor) -> None:
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] not in (1, 3):
        raise UserError(
            f"expected a uint8 batch (N, 1 or 3, H, W), got {images.dtype} {tuple(images.shape)}"
        )
