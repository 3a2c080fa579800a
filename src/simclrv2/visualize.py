"""Pictures for a person to look at: rows of image tiles, e.g. the augmentation grid (an image and
its pretraining views) or an image and its nearest neighbours."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from simclrv2.augment import center_crop

GAP = 2  # pixels of white between tiles
ORIGINALS_GAP = 8  # pixels of white between the first column (originals, queries) and the rest
WHITE = 255


def tile_grid(tiles: Tensor, first_gap: int = ORIGINALS_GAP, min_tile: int = 96) -> Image.Image:
    """Rows of square tiles on white, as an RGB image: uint8 ``tiles`` (R, T, C, S, S), C = 1 or 3.

    ``GAP`` pixels around every tile, ``first_gap`` after the first column. Tiles are enlarged by
    an integer factor (nearest neighbour) to at least ``min_tile`` pixels, so 28 px images stay
    legible.
    """
    rows, columns, _, size, _ = tiles.shape
    zoom = max(1, math.ceil(min_tile / size))
    pixels = tiles.cpu().expand(-1, -1, 3, -1, -1)
    pixels = pixels.repeat_interleave(zoom, dim=3).repeat_interleave(zoom, dim=4)
    pixels = F.pad(pixels, (0, GAP, 0, GAP), value=WHITE)  # a gap after each tile, right and below
    cell = size * zoom + GAP
    canvas = pixels.permute(0, 3, 1, 4, 2).reshape(rows * cell, columns * cell, 3)
    canvas = F.pad(canvas, (0, 0, GAP, 0, GAP, 0), value=WHITE)  # the gap before the first ones
    if columns > 1 and first_gap > GAP:
        extra = torch.full((canvas.shape[0], first_gap - GAP, 3), WHITE, dtype=torch.uint8)
        canvas = torch.cat([canvas[:, : GAP + cell], extra, canvas[:, GAP + cell :]], dim=1)
    return Image.fromarray(canvas.contiguous().numpy())


def augmentation_grid(
    images: Tensor,
    augment: Callable[[Tensor, torch.Generator, Tensor | None], Tensor],
    views: int,
    generator: torch.Generator,
    min_tile: int = 96,
    extents: Tensor | None = None,
) -> Image.Image:
    """One row per image: the original, then ``views`` independent augmented views.

    ``images``: uint8 (N, C, H, W), C = 1 or 3, each image in its ``extents`` (N, 2) (default:
    the whole square); ``augment(images, generator, extents)`` returns float views (N, C, S, S)
    in [0, 1] (a :class:`~simclrv2.augment.SimCLRAugment`, or e.g.
    ``lambda x, g, e: crop_flip(x, 96, g, extents=e)``). The original is the centre square of
    each whole image resized to S. Tiles as :func:`tile_grid`. Returns an RGB image.
    """
    columns = [augment(images, generator, extents) for _ in range(views)]
    size = columns[0].shape[-1] if columns else images.shape[-1]
    columns.insert(0, center_crop(images, size, fraction=1.0, extents=extents))
    tiles = torch.stack([(c.detach().cpu() * 255).round().to(torch.uint8) for c in columns], 1)
    return tile_grid(tiles, ORIGINALS_GAP, min_tile)
