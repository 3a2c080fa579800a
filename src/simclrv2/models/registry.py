"""The registry of named encoders, as timm names its models: the authors' checkpoint naming
(``r<depth>_<width>x_sk<0|1>``), the parameter count the SimCLRv2 paper gives for each of its
thirteen encoders, and torchvision-style constructors (``resnet50(width=2, sk_ratio=0.0625)``).

:data:`ARCHITECTURES` is what ``simclrv2 models`` lists and what the registry test suite runs over
(``tests/test_registry.py``): a name added here is tested the day it is added.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from simclrv2.errors import UserError
from simclrv2.models.resnet import DEPTHS, ResNet, ResNetSpec

SK_RATIO = 0.0625  # SimCLRv2's selective-kernel ratio ("sk1" in the authors' checkpoint names)


@dataclass(frozen=True)
class Architecture:
    """A named encoder and, where the paper gives it, its size in millions of parameters."""

    name: str
    paper_params_m: int | None = None  # SimCLRv2 Table 1 / the released checkpoints
    source: str = ""  # where the name comes from


_SIMCLR_V2 = {
    "r50_1x_sk0": 24,
    "r50_1x_sk1": 35,
    "r50_2x_sk0": 94,
    "r50_2x_sk1": 140,
    "r101_1x_sk0": 43,
    "r101_1x_sk1": 65,
    "r101_2x_sk0": 170,
    "r101_2x_sk1": 257,
    "r152_1x_sk0": 58,
    "r152_1x_sk1": 89,
    "r152_2x_sk0": 233,
    "r152_2x_sk1": 354,
    "r152_3x_sk1": 795,
}
_OTHERS = {
    "r50_4x_sk0": "SimCLR v1 release (with r50_1x_sk0 and r50_2x_sk0)",
    "r18_1x_sk0": "CPU-sized runs and the peers' CIFAR benchmarks",
    "r34_1x_sk0": "CPU-sized runs",
    "r200_1x_sk0": "the deepest ResNet the authors' code builds",
}
ARCHITECTURES: dict[str, Architecture] = {
    **{name: Architecture(name, m, "SimCLRv2 release") for name, m in _SIMCLR_V2.items()},
    **{name: Architecture(name, None, source) for name, source in _OTHERS.items()},
}


_NAME = re.compile(r"^r(?:esnet)?(\d+)(?:_(\d*\.?\d+)x)?(?:_sk([01]))?$", re.IGNORECASE)


def parse_arch(name: str, cifar_stem: bool = False, in_channels: int = 3) -> ResNetSpec:
    """``r152_3x_sk1`` (the authors' naming), ``r18_0.25x``, ``resnet50`` -> a :class:`ResNetSpec`."""
    match = _NAME.match(name.strip())
    if not match:
        raise UserError(
            f"unknown architecture {name!r}; use r<depth>_<width>x_sk<0|1> with depth in "
            f"{sorted(DEPTHS)}, e.g. r50_1x_sk0, r152_3x_sk1, r18_0.25x_sk0"
        )
    depth, width, sk = int(match[1]), float(match[2] or 1), match[3] == "1"
    if depth not in DEPTHS:
        raise UserError(f"unknown ResNet depth {depth} in {name!r}; choose one of {sorted(DEPTHS)}")
    return ResNetSpec(depth, width, SK_RATIO if sk else 0.0, cifar_stem, in_channels)


def arch_name(spec: ResNetSpec) -> str:
    """Inverse of :func:`parse_arch` (``r50_1x_sk1``); the stem is not part of the name."""
    return f"r{spec.depth}_{spec.width:g}x_sk{int(spec.sk_ratio > 0)}"


def build_encoder(
    name: str,
    image_size: int | None = None,
    in_channels: int = 3,
    cifar_stem: bool | None = None,
    zero_init_residual: bool = True,
) -> ResNet:
    """Build an encoder by name. The CIFAR stem is used when ``cifar_stem`` says so, or, when it
    is None, for inputs of 32 px or less (the authors' rule)."""
    if cifar_stem is None:
        cifar_stem = image_size is not None and image_size <= 32
    return ResNet(parse_arch(name, cifar_stem, in_channels), zero_init_residual)


def _constructor(depth: int):
    def build(
        width: float = 1.0,
        sk_ratio: float = 0.0,
        cifar_stem: bool = False,
        in_channels: int = 3,
        zero_init_residual: bool = True,
    ) -> ResNet:
        spec = ResNetSpec(depth, width, sk_ratio, cifar_stem, in_channels)
        return ResNet(spec, zero_init_residual)

    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = f"ResNet-{depth} encoder, e.g. ``resnet{depth}(width=2, sk_ratio=0.0625)``."
    return build


resnet18 = _constructor(18)
resnet34 = _constructor(34)
resnet50 = _constructor(50)
resnet101 = _constructor(101)
resnet152 = _constructor(152)
resnet200 = _constructor(200)
