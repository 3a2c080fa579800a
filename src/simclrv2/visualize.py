"""Pictures of the data pipeline for a person to look at: the augmentation grid."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from PIL import Image
from torch import Tensor

from simclrv2.augment import center_crop

GAP = 2  # pixels of white between tiles
ORIGINALS_GAP = 8  # pixels of white between the originals column and the views


def augmentation_grid(
    images: Tensor,
    augment: Callable[[Tensor, torch.Generator], Tensor],
    views: int,
    generator: torch.Generator,
    min_tile: int = 96,
) -> Image.Image:
    """One row per image: the original, then ``views`` independent augmented views.

    ``images``: uint8 (N, C, H, W), C = 1 or 3; ``augment(images, generator)`` returns float views
    (N, C, S, S) in [0, 1] (a :class:`~simclrv2.augment.SimCLRAugment`, or e.g.
    ``lambda x, g: crop_flip(x, 96, g)``). The original is the whole image
    resized to S. Tiles are enlarged by an integer factor (nearest neighbour) to at least
    ``min_tile`` pixels, so 28 px images stay legible. Returns an RGB image.
    """
    columns = [augment(images, generator) for _ in range(views)]
    size = columns[0].shape[-1] if columns else images.shape[-1]
    columns.insert(0, center_crop(images, size, fraction=1.0))
    zoom = max(1, math.ceil(min_tile / size))
    tile = size * zoom
    n = len(images)
    width = GAP + len(columns) * (tile + GAP) + (ORIGINALS_GAP - GAP if views else 0)
    canvas = torch.full((n * (tile + GAP) + GAP, width, 3), 255, dtype=torch.uint8)
    for j, column in enumerate(columns):
        pixels = (column.detach().cpu() * 255).round().to(torch.uint8).expand(-1, 3, -1, -1)
        pixels = pixels.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
        left = GAP + j * (tile + GAP) + (ORIGINALS_GAP - GAP if j else 0)
        for i in range(n):
            top = GAP + i * (tile + GAP)
            canvas[top : top + tile, left : left + tile] = pixels[i].permute(1, 2, 0)
    return Image.fromarray(canvas.numpy())
