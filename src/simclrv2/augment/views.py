"""The pretraining view: :class:`SimCLRAugment` draws every random choice of a batch of views
(:class:`ViewParams`) and renders them (SimCLR App. A; :mod:`simclrv2.augment` gives the semantics)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
from typing import Literal

import torch
from torch import Tensor

from simclrv2.augment.colour import (
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    blur_kernel_size,
    gaussian_blur,
    scale_brightness,
    shift_brightness,
    to_grayscale,
)
from simclrv2.augment.crops import (
    RATIO,
    SCALE,
    CropSampler,
    check_images,
    image_extents,
    outside_autocast,
    resized_crops,
    sample_crop_boxes,
)
from simclrv2.errors import UserError

# float elements rendered at a time on the CPU: about 8 MB (benchmarks/RESULTS.md, augmentation)
CPU_CHUNK_ELEMENTS = 2**21
JITTER_OPS = ("brightness", "contrast", "saturation", "hue")  # the jitter's ops, in factor order


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
    vflip: Tensor  # (N,) bool: flipped upside down
    quarter_turns: Tensor  # (N,) int64 in 0..3: turns by 90 degrees, as torch.rot90 on (H, W)

    def __getitem__(self, index: slice | Tensor) -> ViewParams:
        """The parameters of a subset of the images."""
        return ViewParams(*(getattr(self, f.name)[index] for f in fields(self)))


@dataclass(frozen=True)
class SimCLRAugment:
    """SimCLR's pretraining augmentation (SimCLR App. A; SimCLRv2 keeps it), as parameters.

    ``augment(images_uint8, generator)`` returns one float view per image; the pretraining step
    calls it twice. Defaults are the reference's ImageNet recipe; its CIFAR-10 recipe is
    ``jitter_strength=0.5, blur=False`` (see :meth:`reference`). Semantics: module docstring.
    ``vflip_p``, ``rot90`` and ``jitter_ops`` are not the paper's: invariances of other domains
    (slides, satellite and medical images); at their defaults the views are the reference's.
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
    vflip_p: float = 0.0  # vertical flip
    rot90: bool = False  # turn each view by 0, 90, 180 or 270 degrees, uniformly
    jitter_ops: tuple[str, ...] = JITTER_OPS  # the jitter's ops; the others are left out

    def __post_init__(self) -> None:
        probabilities = {
            "flip_p": self.flip_p,
            "vflip_p": self.vflip_p,
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
        if not set(self.jitter_ops) <= set(JITTER_OPS):
            problems.append(f"jitter_ops must be among {JITTER_OPS}, got {self.jitter_ops}")
        if problems:
            raise UserError("SimCLRAugment: " + "; ".join(problems))

    @classmethod
    def reference(cls, size: int) -> SimCLRAugment:
        """The authors' recipe for this output size: CIFAR-10's (s = 0.5, no blur) at 32 px or
        less, ImageNet's (s = 1.0, blur) above."""
        small = size <= 32
        return cls(size=size, jitter_strength=0.5 if small else 1.0, blur=not small)

    def sample(
        self, n: int, height: int | Tensor, width: int | Tensor, generator: torch.Generator
    ) -> ViewParams:
        """Draw every random choice for n views of height x width images (ints, or (n,) tensors
        of each image's extent), in a fixed order."""
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
        # drawn only when on, so that the reference's views keep the reference's stream
        none = torch.zeros(n, dtype=torch.int64, device=device)
        vflip = coin(self.vflip_p) if self.vflip_p else none.bool()
        turns = torch.randint(4, (n,), generator=generator, device=device) if self.rot90 else none
        return ViewParams(boxes, flip, jitter, order, factors, grayscale, blur, sigma, vflip, turns)

    @outside_autocast
    def apply(self, images: Tensor, params: ViewParams, subset: bool | None = None) -> Tensor:
        """Render the views ``params`` describes: uint8 (N, C, H, W) -> float32 (N, C, size, size).

        Each op runs once per step of the random order (16 times for the jitter), a CPU chunk at a
        time; the op count stays in the hundreds, which matters on a busy CPU where every
        multi-threaded op can wait for a descheduled thread. ``subset``: how each op meets its
        images (:func:`_apply_where`; None: by device, with no host read except on the CPU).
        """
        n, c = images.shape[:2]
        chunk = max(1, CPU_CHUNK_ELEMENTS // (c * self.size**2)) if images.is_cpu else n
        if chunk >= n:
            return self._render(images, params, subset)
        views = torch.empty(n, c, self.size, self.size)
        for start in range(0, n, chunk):
            part = slice(start, start + chunk)
            views[part] = self._render(images[part], params[part], subset)
        return views

    def _render(self, images: Tensor, params: ViewParams, subset: bool | None) -> Tensor:
        # a turn by k quarters is flips (k = 1: left-right, 2: both, 3: upside down), done by the
        # resampling, then a transpose where k is odd
        turns = params.quarter_turns
        flip = params.flip ^ ((turns == 1) | (turns == 2))
        x = resized_crops(images, params.boxes, self.size, flip, params.vflip ^ (turns >= 2))
        if self.rot90:
            x = _apply_where(x, turns % 2 == 1, _transpose, subset=subset)
        brightness = scale_brightness if self.brightness == "v2" else shift_brightness
        ops = (brightness, adjust_contrast, adjust_saturation, adjust_hue)
        for step in range(4):
            for index, op in enumerate(ops):
                if JITTER_OPS[index] not in self.jitter_ops:
                    continue
                chosen = params.jitter & (params.order[:, step] == index)
                x = _apply_where(x, chosen, op, params.factors[:, index], subset=subset)
        x = _apply_where(x, params.grayscale, to_grayscale, subset=subset)
        if self.blur:  # else no image is blurred (params.blur is all False)
            blur = partial(gaussian_blur, kernel_size=blur_kernel_size(self.size))
            x = _apply_where(x, params.blur, blur, params.sigma, subset=subset)
        return x

    def __call__(
        self, images: Tensor, generator: torch.Generator, extents: Tensor | None = None
    ) -> Tensor:
        """One augmented view of every image: uint8 (N, C, H, W) -> float32 (N, C, size, size);
        crops are cut from each image's ``extents`` (N, 2) (default: the whole square)."""
        check_images(images)
        height, width = image_extents(images, extents).unbind(1)
        return self.apply(images, self.sample(len(images), height, width, generator))


def _transpose(x: Tensor) -> Tensor:
    """Each image mirrored about its main diagonal: (N, C, H, W) -> (N, C, W, H)."""
    return x.transpose(2, 3)


def _apply_where(
    x: Tensor,
    mask: Tensor,
    op: Callable[..., Tensor],
    *per_image: Tensor,
    subset: bool | None = None,
) -> Tensor:
    """x[i] = clip(op(x[i], *(p[i] for p in per_image))) where mask (N,) holds, x[i] elsewhere.

    ``subset=True`` runs ``op`` on the chosen images only, in place on ``x``: the faster way on a
    CPU, but finding them reads the mask back to the host. ``subset=False`` runs ``op`` on the
    whole batch and keeps its result where the mask holds: fixed shapes and no host read, so a
    GPU never waits for the host. None (the default): the subset on the CPU, the blend elsewhere.
    Both give the same values up to float rounding (``op`` acts on each image alone).
    """
    if subset is None:
        subset = x.is_cpu
    if not subset:
        return torch.where(mask[:, None, None, None], op(x, *per_image), x).clamp_(0, 1)
    index = mask.nonzero().squeeze(1)
    if len(index):
        chosen = op(x.index_select(0, index), *(p[index] for p in per_image))
        x.index_copy_(0, index, chosen.clamp_(0, 1))  # both far faster than x[index] on CPU
    return x
