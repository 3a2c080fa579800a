"""SimCLR's colour operations and blur at given per-image parameters, on float batches
(N, C, H, W) in [0, 1], as the TF kernels the authors' code calls (:mod:`simclrv2.augment`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from simclrv2.luma import GRAY_WEIGHTS


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
    where the clip to S = 1 binds. Identity unless there are 3 channels.
    """
    if x.shape[1] != 3:  # grey or a multi-band stack: no hue, saturation or grey
        return x
    value = x.amax(dim=1, keepdim=True)  # (N, 1, H, W)
    spread = value - x.amin(dim=1, keepdim=True)
    f = (value / spread.clamp_min_(1e-12)).clamp_(max=_per_image(factor))
    return (value - x).mul_(f).neg_().add_(value)


def adjust_hue(x: Tensor, delta: Tensor) -> Tensor:
    """``tf.image.adjust_hue``: HSV hue plus ``delta`` turns (N,), modulo 1. Identity unless RGB.

    Branch-free (no ``where`` or comparisons, several times faster on CPU): the hue in sextants
    from the max channel (ties to the first, as TF), plus the shift; then HSV -> RGB as
    min + chroma * clip(d - 1, 0, 1), with d the distance of hue + n (n = 3, 1, -1 for R, G, B)
    to the nearest multiple of 6 (a triangle wave, unrolled as nested absolute values).
    """
    if x.shape[1] != 3:  # grey or a multi-band stack: no hue, saturation or grey
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
    offsets = torch.arange(-3.0, -8.0, -2.0, device=x.device)[:, None, None]  # -3, -5, -7
    distance = (hue[:, None] + offsets).abs_().sub_(3).abs_().sub_(3).abs_()  # (N, 3, H, W)
    return distance.sub_(1).clamp_(0, 1).mul_(chroma[:, None]).add_(low[:, None])


def to_grayscale(x: Tensor) -> Tensor:
    """``tf.image.rgb_to_grayscale`` copied to every channel. Identity unless RGB."""
    if x.shape[1] != 3:  # grey or a multi-band stack: no hue, saturation or grey
        return x
    w_r, w_g, w_b = GRAY_WEIGHTS
    gray = (x[:, 0] * w_r).add_(x[:, 1], alpha=w_g).add_(x[:, 2], alpha=w_b)  # (N, H, W)
    return gray[:, None].repeat(1, x.shape[1], 1, 1)


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
