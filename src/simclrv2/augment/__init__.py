r"""SimCLR's augmentation on whole batches, on whatever device holds them (SimCLR App. A).

Every function is pure: it takes a uint8 batch (N, C, H, W) (C = 1, 3 or a band count) and,
where it draws, a ``torch.Generator`` on the batch's device, and returns float32 (N, C, size,
size) in [0, 1] without mean/std normalisation (the reference applies none). Every image and every call draws
its own parameters; the same generator state gives the same output (bit for bit on CPU).

Public names (modules: ``crops``, ``colour``, ``views``):

- :class:`SimCLRAugment`: the pretraining view (frozen dataclass of parameters, call it twice for
  two views); :meth:`SimCLRAugment.reference` gives the authors' ImageNet or CIFAR-10 recipe.
  ``sample`` draws :class:`ViewParams` and ``apply`` renders them, for inspection and tests.
- :func:`crop_flip`: random resized crop + horizontal flip only (fine-tuning and distillation).
- :func:`center_crop`: evaluation crop (87.5% of the shorter side above 32 px, none at 32 px).
- :func:`image_extents`: each image's (height, width): whole images stored on a larger square
  (image folders) carry their own, and every crop is cut within them.
- :func:`sample_crop_boxes`, :func:`resized_crops`: the crop sampler and the batched
  crop + flip + bicubic resize.
- Colour ops at given per-image parameters: :func:`scale_brightness` (v2),
  :func:`shift_brightness` (v1), :func:`adjust_contrast`, :func:`adjust_saturation`,
  :func:`adjust_hue`, :func:`to_grayscale`; and :func:`gaussian_blur`, :func:`blur_kernel_size`.

Semantics follow the authors' TF2 ``data_util.py`` and the TF kernels it calls:

- Crop: ``crop_sampler="area"`` (default: the paper, docs/facts.md) draws the area fraction
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
- Not in the reference, off by default, for images without an up or a colour that matters
  (slides, satellite, medical images): a vertical flip with probability ``vflip_p`` (in the
  resampling, with the horizontal one), turns by a uniform multiple of 90 degrees (``rot90``:
  flips, then a transpose), and ``jitter_ops`` to leave some of the jitter's ops out.
- One channel (e.g. Fashion-MNIST): brightness and contrast apply; saturation, hue and
  grayscale are identities (a gray image has no saturation or hue). The reference supports RGB
  only.
"""

from __future__ import annotations

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
    EVAL_CROP,
    RATIO,
    SCALE,
    center_crop,
    crop_flip,
    image_extents,
    resized_crops,
    sample_crop_boxes,
)
from simclrv2.augment.views import SimCLRAugment, ViewParams

__all__ = [
    "EVAL_CROP",
    "RATIO",
    "SCALE",
    "SimCLRAugment",
    "ViewParams",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "blur_kernel_size",
    "center_crop",
    "crop_flip",
    "gaussian_blur",
    "image_extents",
    "resized_crops",
    "sample_crop_boxes",
    "scale_brightness",
    "shift_brightness",
    "to_grayscale",
]
