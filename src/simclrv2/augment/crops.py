"""Crops of a uint8 batch: the random resized crop of SimCLR (SimCLR App. A; the sampler of
docs/facts.md or TF's ``sample_distorted_bounding_box``), the crop + flip of fine-tuning and
distillation, and the evaluation centre crop, each resized by TF2's bicubic resampling as batched
matrix products (:mod:`simclrv2.augment` lists the semantics)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import wraps
from typing import Literal

import torch
from torch import Tensor

from simclrv2.errors import UserError

SCALE = (0.08, 1.0)  # crop area fraction range (SimCLR App. A)
RATIO = (3 / 4, 4 / 3)  # crop aspect ratio (width / height) range (SimCLR App. A)
MAX_ATTEMPTS = 100  # crop attempts before the fallback, as the reference
TF_MIN_COVERED = 0.1  # the reference's min_object_covered: crops below 10% of the image fail
EVAL_CROP = 0.875  # centre-crop fraction for evaluation above 32 px (reference CROP_PROPORTION)
KEYS_A = -0.5  # Keys cubic coefficient of TF2's half-pixel bicubic resize

CropSampler = Literal["area", "tf"]


def check_images(images: Tensor) -> None:
    """The input contract of every augmentation: a uint8 batch (N, C, H, W), C >= 1 (grey, RGB
    or a multi-band stack, whose colour operations but brightness and contrast are skipped)."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] < 1:
        raise UserError(
            f"expected a uint8 batch (N, C, H, W), got {images.dtype} {tuple(images.shape)}"
        )


def outside_autocast(function: Callable[..., Tensor]) -> Callable[..., Tensor]:
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
    n: int, height: Tensor, width: Tensor, scale, ratio, generator: torch.Generator, device
) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's sampler (docs/facts.md): (h, w, success) per image of ``height`` x ``width``
    ((n, 1) each); area U(scale) of the image's, log-uniform aspect."""
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
    height, width = height.squeeze(1), width.squeeze(1)
    image_aspect = width.double() / height
    narrow, wide = image_aspect < ratio[0], image_aspect > ratio[1]
    fallback_w = torch.where(wide, (height * ratio[1]).round().long(), width)
    fallback_h = torch.where(narrow, (width / ratio[0]).round().long(), height)
    h = torch.where(found, h, fallback_h)
    w = torch.where(found, w, fallback_w)
    return h, w, found


def _tf_boxes(
    n: int, height: Tensor, width: Tensor, scale, ratio, generator: torch.Generator, device
) -> tuple[Tensor, Tensor, Tensor]:
    """``sample_distorted_bounding_box`` (its GenerateRandomCrop), all attempts at once, per
    image of ``height`` x ``width`` ((n, 1) each)."""
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
    height, width = height.squeeze(1), width.squeeze(1)
    return torch.where(found, h, height), torch.where(found, w, width), found


def sample_crop_boxes(
    n: int,
    height: int | Tensor,
    width: int | Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = SCALE,
    ratio: tuple[float, float] = RATIO,
    sampler: CropSampler = "area",
) -> Tensor:
    """Random crop boxes for n images of height x width: (n, 4) int64 rows (top, left, h, w).

    ``height`` and ``width`` are each image's own (ints, or (n,) int tensors: the extents of
    whole images stored on a larger square); areas and aspects are relative to each image.
    ``sampler`` is "area" (the paper, docs/facts.md) or "tf" (the reference's
    ``sample_distorted_bounding_box``); see the package docstring. Offsets are uniform over the
    positions where the box fits ("tf": all but the last, as TF's kernel), and centred for the
    "area" sampler's fallback crop.
    """
    device = generator.device
    height, width = (torch.as_tensor(s, device=device).expand(n)[:, None] for s in (height, width))
    draw = {"area": _area_boxes, "tf": _tf_boxes}[sampler]
    h, w, found = draw(n, height, width, scale, ratio, generator, device)
    height, width = height.squeeze(1), width.squeeze(1)
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


@outside_autocast
def resized_crops(
    images: Tensor,
    boxes: Tensor,
    size: int,
    flip: Tensor | None = None,
    vflip: Tensor | None = None,
) -> Tensor:
    """Crop each image to its box, flip it left-right where ``flip`` and upside down where
    ``vflip``, resize it to size x size.

    ``images``: uint8 (N, C, H, W); ``boxes``: (N, 4) int (top, left, h, w); ``flip``, ``vflip``:
    (N,) bool. Returns float32 (N, C, size, size) in [0, 1]. Bicubic as TF2 (module docstring);
    a flip reverses the rows of a resampling matrix, so it is exact.
    """
    check_images(images)
    n, c, height, width = images.shape
    # Rows are made the outer axis, so each resampling product is ONE matrix per image over all
    # channels, with no broadcast copies: (size, H) @ (H, C*W), then (size*C, W) @ (W, size).
    x = torch.empty(n, height, c, width, device=images.device)
    x.copy_(images.permute(0, 2, 1, 3))  # the uint8 -> float32 conversion, in that layout
    rows = _resampling_matrix(boxes[:, 0], boxes[:, 2], height, size, vflip)  # (N, size, H)
    cols = _resampling_matrix(boxes[:, 1], boxes[:, 3], width, size, flip)  # (N, size, W)
    x = torch.bmm(rows, x.view(n, height, c * width))  # (N, size, C*W)
    x = torch.bmm(x.view(n, size * c, width), cols.transpose(1, 2))  # (N, size*C, size)
    out = torch.empty(n, c, size, size, device=images.device)
    return out.copy_(x.view(n, size, c, size).permute(0, 2, 1, 3)).clamp_(0, 255).div_(255)


def image_extents(images: Tensor, extents: Tensor | None = None) -> Tensor:
    """Each image's (height, width) in pixels, (N, 2) int64 on the batch's device: ``extents``
    (whole images stored top-left on a larger square) or the batch's whole side."""
    if extents is not None:
        return extents.to(images.device)
    n, _, height, width = images.shape
    return torch.tensor([height, width], device=images.device).expand(n, 2)


def crop_flip(
    images: Tensor,
    size: int,
    generator: torch.Generator,
    crop_scale: tuple[float, float] = SCALE,
    crop_ratio: tuple[float, float] = RATIO,
    flip_p: float = 0.5,
    crop_sampler: CropSampler = "area",
    extents: Tensor | None = None,
) -> Tensor:
    """Random resized crop and horizontal flip only: the augmentation of fine-tuning and
    distillation (SimCLRv2, Sec. 3). uint8 (N, C, H, W) -> float32 (N, C, size, size) in [0, 1];
    ``extents`` (N, 2): each image's (height, width) on its stored square (default: all of it).
    """
    height, width = image_extents(images, extents).unbind(1)
    boxes = sample_crop_boxes(
        len(images), height, width, generator, crop_scale, crop_ratio, crop_sampler
    )
    flip = torch.rand(len(images), generator=generator, device=generator.device) < flip_p
    return resized_crops(images, boxes, size, flip)


def center_crop(
    images: Tensor, size: int, fraction: float | None = None, extents: Tensor | None = None
) -> Tensor:
    """Evaluation view: the central square of ``fraction`` of each image's shorter side (of its
    ``extents`` when given: the original image's, not the stored square's), resized to size.

    ``fraction=None`` follows the reference: 0.875 when ``size`` > 32, else 1.0 (no crop; a
    size x size input then comes back unchanged, only converted to floats in [0, 1]).
    """
    if fraction is None:
        fraction = EVAL_CROP if size > 32 else 1.0
    height, width = image_extents(images, extents).unbind(1)
    # TF's _compute_crop_shape for a square output, rounded half to even as Python's round
    side = (fraction * torch.minimum(height, width).double()).round().long()
    boxes = torch.stack([(height - side + 1) // 2, (width - side + 1) // 2, side, side], dim=1)
    return resized_crops(images, boxes, size)
