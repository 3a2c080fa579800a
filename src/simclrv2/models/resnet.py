"""ResNet encoders of SimCLR / SimCLRv2, layer for layer as the authors' TensorFlow code builds them.

Depths 18-200, a width multiplier (1-4, or fractions such as 0.25 for CPU-sized runs), selective
kernels (SimCLRv2, Sec. 2: ``sk_ratio=0.0625``, which also switches on the ResNet-D stem and
shortcuts), and the CIFAR stem (one 3x3 stride-1 conv, no max-pool). The forward pass returns the
pooled representation h; :meth:`ResNet.features` returns the intermediate maps under the names the
authors' graph uses (``initial_conv``, ``initial_max_pool``, ``block_group1`` ... ``final_avg_pool``).

Exactness with the released weights depends on three details other ports get wrong:
the stem max-pool pads like TF "SAME" (only bottom/right for even sizes), the stride-1 ResNet-D
shortcut pool excludes its padding from the mean, and BatchNorm uses epsilon 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simclrv2.errors import UserError

# depth -> (block type, blocks per group), from the authors' resnet.py
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
    200: ("bottleneck", (3, 24, 36, 3)),
}
SK_MIN_DIM = 32  # lower bound of the SK mixing layer's width (authors' SK_Conv2D min_dim)


def _tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """(before, after) padding of TF "SAME" along one axis: the odd extra pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def conv(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """Bias-free conv padded as the authors' ``Conv2dFixedPadding``.

    Strided convs pad (k-1)//2 before and the rest after; stride-1 convs pad "SAME". For the odd
    kernels used here both are symmetric k//2, so a plain ``padding=k//2`` is exact.
    """
    return nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False)


class BatchNormReLU(nn.Sequential):
    """BatchNorm (eps 1e-5, momentum 0.1 = TF decay 0.9), then ReLU unless ``relu=False``.
    ``ends_branch`` marks the last BN of a residual branch (see :meth:`ResNet.reset_parameters`)."""

    def __init__(self, channels: int, relu: bool = True, ends_branch: bool = False) -> None:
        bn = nn.BatchNorm2d(channels)
        super().__init__(bn, nn.ReLU(inplace=True)) if relu else super().__init__(bn)
        self.ends_branch = ends_branch


class TFSameMaxPool(nn.Module):
    """3x3 stride-2 max-pool with TF "SAME" padding (-inf, only bottom/right for even sizes)."""

    def __init__(self, kernel: int = 3, stride: int = 2) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        top, bottom = _tf_same_padding(x.shape[-2], self.kernel, self.stride)
        left, right = _tf_same_padding(x.shape[-1], self.kernel, self.stride)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
        return F.max_pool2d(x, self.kernel, self.stride)


class ResNetDPool(nn.Module):
    """2x2 average pool of a ResNet-D shortcut, as the authors' code computes it.

    Stride 2: pad one zero after on each axis, then a "VALID" 2x2/2 pool (the padding is counted, but
    for even sizes it is never reached). Stride 1: "SAME" 2x2/1 with the padding excluded from the mean.
    """

    def __init__(self, stride: int) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 1, 0, 1))
        pooled = F.avg_pool2d(x, 2, self.stride)
        if self.stride == 1:  # divide by the count of real pixels, not by 4
            h, w = x.shape[-2] - 1, x.shape[-1] - 1
            rows = torch.full((h,), 2.0, device=x.device, dtype=x.dtype)
            cols = torch.full((w,), 2.0, device=x.device, dtype=x.dtype)
            rows[-1], cols[-1] = 1.0, 1.0
            pooled = pooled * (4.0 / (rows[:, None] * cols[None, :]))
        return pooled


def shortcut(in_ch: int, out_ch: int, stride: int, resnet_d: bool) -> nn.Sequential:
    """Projection shortcut: 1x1 conv (strided) + BN, or ResNet-D's pool then stride-1 1x1 conv + BN."""
    if resnet_d:
        return nn.Sequential(
            ResNetDPool(stride), conv(in_ch, out_ch, 1), BatchNormReLU(out_ch, relu=False)
        )
    return nn.Sequential(conv(in_ch, out_ch, 1, stride), BatchNormReLU(out_ch, relu=False))


class SelectiveKernel(nn.Module):
    """Selective-kernel 3x3 conv (arXiv 1903.06586) as in SimCLRv2: two 3x3 streams from one conv of
    2x filters, mixed by a softmax over streams computed from their pooled sum."""

    def __init__(self, in_ch: int, filters: int, stride: int, sk_ratio: float) -> None:
        super().__init__()
        mid = max(int(filters * sk_ratio), SK_MIN_DIM)
        self.streams = nn.Sequential(
            conv(in_ch, 2 * filters, 3, stride), BatchNormReLU(2 * filters)
        )
        self.squeeze = nn.Sequential(conv(filters, mid, 1), BatchNormReLU(mid))
        self.excite = conv(mid, 2 * filters, 1)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.streams(x).chunk(2, dim=1)  # two (N, f, H, W) streams
        pooled = (a + b).mean((2, 3), keepdim=True)  # (N, f, 1, 1)
        wa, wb = self.excite(self.squeeze(pooled)).chunk(2, dim=1)
        wa, wb = torch.softmax(torch.stack((wa, wb)), dim=0)  # softmax over the two streams
        return a * wa + b * wb


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). SK is not applied to basic blocks, as in the authors' code."""

    expansion = 1

    def __init__(
        self, in_ch: int, filters: int, stride: int, project: bool, sk_ratio: float
    ) -> None:
        super().__init__()
        self.shortcut = shortcut(in_ch, filters, stride, sk_ratio > 0) if project else None
        self.branch = nn.Sequential(
            conv(in_ch, filters, 3, stride),
            BatchNormReLU(filters),
            conv(filters, filters, 3),
            BatchNormReLU(filters, relu=False, ends_branch=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.branch(x) + identity)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (strided; selective kernel when ``sk_ratio > 0``) -> 1x1 with 4x filters."""

    expansion = 4

    def __init__(
        self, in_ch: int, filters: int, stride: int, project: bool, sk_ratio: float
    ) -> None:
        super().__init__()
        out_ch = 4 * filters
        self.shortcut = shortcut(in_ch, out_ch, stride, sk_ratio > 0) if project else None
        if sk_ratio > 0:
            middle: nn.Module = SelectiveKernel(filters, filters, stride, sk_ratio)
        else:
            middle = nn.Sequential(conv(filters, filters, 3, stride), BatchNormReLU(filters))
        self.branch = nn.Sequential(
            conv(in_ch, filters, 1),
            BatchNormReLU(filters),
            middle,
            conv(filters, out_ch, 1),
            BatchNormReLU(out_ch, relu=False, ends_branch=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.branch(x) + identity)


@dataclass(frozen=True)
class ResNetSpec:
    """Everything that defines an encoder's architecture (saved beside exported weights)."""

    depth: int = 50
    width: float = 1.0
    sk_ratio: float = 0.0
    cifar_stem: bool = False
    in_channels: int = 3


class ResNet(nn.Module):
    """ResNet encoder f: image batch (N, C, H, W) in [0, 1] -> representation h (N, ``out_dim``).

    ``zero_init_residual`` (an initialisation, not part of the architecture): the last BN of each
    residual branch starts at gamma = 0, as the authors' ``init_zero``; False starts it at 1, as
    torchvision's default (a deviation from docs/facts.md: ``model.zero_init_residual=false``).
    """

    def __init__(self, spec: ResNetSpec, zero_init_residual: bool = True) -> None:
        super().__init__()
        if spec.depth not in DEPTHS:
            raise UserError(f"unknown ResNet depth {spec.depth}; choose one of {sorted(DEPTHS)}")
        if not 0 < spec.width <= 4 or int(64 * spec.width) < 2:
            raise UserError(
                f"width multiplier {spec.width} is out of range; use 0.03125 to 4 (1, 2, 3, 4 in the papers)"
            )
        if spec.sk_ratio < 0:
            raise UserError(
                f"sk_ratio must be >= 0 (0 = off, 0.0625 in SimCLRv2), got {spec.sk_ratio}"
            )
        self.spec = spec
        kind, blocks = DEPTHS[spec.depth]
        block = Bottleneck if kind == "bottleneck" else BasicBlock
        stem_ch = int(64 * spec.width)

        if spec.cifar_stem:
            self.stem = conv(spec.in_channels, stem_ch, 3)
        elif spec.sk_ratio > 0:  # ResNet-D stem: three 3x3 convs
            self.stem = nn.Sequential(
                conv(spec.in_channels, stem_ch // 2, 3, 2),
                BatchNormReLU(stem_ch // 2),
                conv(stem_ch // 2, stem_ch // 2, 3),
                BatchNormReLU(stem_ch // 2),
                conv(stem_ch // 2, stem_ch, 3),
            )
        else:
            self.stem = conv(spec.in_channels, stem_ch, 7, 2)
        self.stem_bn = BatchNormReLU(stem_ch)
        self.max_pool = nn.Identity() if spec.cifar_stem else TFSameMaxPool()

        groups: list[nn.Module] = []
        in_ch = stem_ch
        for i, count in enumerate(blocks):
            filters = int(64 * 2**i * spec.width)
            layers = []
            for j in range(count):
                stride = 2 if i > 0 and j == 0 else 1
                layers.append(block(in_ch, filters, stride, j == 0, spec.sk_ratio))
                in_ch = filters * block.expansion
            groups.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = groups
        self.out_dim = in_ch
        self.zero_init_residual = zero_init_residual
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TF's VarianceScaling(1.0, fan_in, truncated normal) for convs; BN gamma 1, except 0 at
        the end of each residual branch when ``self.zero_init_residual``; BN beta 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
                std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of N(0,1) truncated at 2
                nn.init.trunc_normal_(m.weight, std=std, a=-2 * std, b=2 * std)
            elif isinstance(m, BatchNormReLU):
                gamma = 0.0 if m.ends_branch and self.zero_init_residual else 1.0
                nn.init.constant_(m[0].weight, gamma)
                nn.init.zeros_(m[0].bias)

    def features(self, x: Tensor) -> dict[str, Tensor]:
        """Intermediate maps under the authors' graph names, ending with h as ``final_avg_pool``."""
        out: dict[str, Tensor] = {}
        x = out["initial_conv"] = self.stem(x)
        x = out["initial_max_pool"] = self.max_pool(self.stem_bn(x))
        for i, group in enumerate((self.layer1, self.layer2, self.layer3, self.layer4), start=1):
            x = out[f"block_group{i}"] = group(x)
        out["final_avg_pool"] = x.mean((2, 3))
        return out

    def forward(self, x: Tensor) -> Tensor:
        x = self.max_pool(self.stem_bn(self.stem(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return x.mean((2, 3))  # h: (N, out_dim)
