"""Size of an architecture without allocating it: parameters and FLOPs counted on the meta device."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from simclrv2.models.registry import ARCHITECTURES, build_encoder


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_flops(encoder: nn.Module, image_size: int = 224, in_channels: int = 3) -> int:
    """FLOPs of one forward pass on one image (2 per multiply-add; a ResNet-50 is about 8.2 G)."""
    device = next(encoder.parameters()).device
    x = torch.empty(1, in_channels, image_size, image_size, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        encoder.eval()(x)
    return counter.get_total_flops()


def architecture_table(image_size: int = 224) -> list[dict]:
    """The registered architectures with encoder parameter count, the paper's figure, and GFLOPs."""
    rows = []
    for name, architecture in ARCHITECTURES.items():
        with torch.device("meta"):
            encoder = build_encoder(name, image_size=image_size)
        rows.append(
            {
                "arch": name,
                "params_M": round(count_parameters(encoder) / 1e6, 2),
                "paper_params_M": architecture.paper_params_m,
                "feature_dim": encoder.out_dim,
                f"GFLOPs_{image_size}px": round(count_flops(encoder, image_size) / 1e9, 2),
            }
        )
    return rows
