import numpy as np
import pytest
import torch
from PIL import Image

from simclrv2.augment import SimCLRAugment, crop_flip
from simclrv2.visualize import GAP, ORIGINALS_GAP, augmentation_grid


def jpeg_batch(folder, n: int, side: int) -> torch.Tensor:
    """The first n JPEGs of a folder, centre-cropped square and resized with Pillow: uint8 (n, 3, S, S)."""
    images = []
    for path in sorted(folder.glob("*.jpg"))[:n]:
        image = Image.open(path).convert("RGB")
        short = min(image.size)
        left, top = (image.width - short) // 2, (image.height - short) // 2
        image = image.crop((left, top, left + short, top + short)).resize((side, side))
        images.append(torch.from_numpy(np.array(image)).permute(2, 0, 1))
    return torch.stack(images)


def tile(grid: np.ndarray, row: int, column: int, size: int) -> np.ndarray:
    top = GAP + row * (size + GAP)
    left = GAP + column * (size + GAP) + (ORIGINALS_GAP - GAP if column else 0)
    return grid[top : top + size, left : left + size]


def test_grid_of_real_photos_has_originals_then_distinct_views(shared_dir):
    images = jpeg_batch(shared_dir / "data" / "imagenet-sample", 3, 96)
    grid = augmentation_grid(images, SimCLRAugment(size=96), 4, torch.Generator().manual_seed(0))
    assert grid.mode == "RGB"
    assert grid.size == (GAP + 5 * (96 + GAP) + ORIGINALS_GAP - GAP, GAP + 3 * (96 + GAP))
    pixels = np.asarray(grid)
    for row in range(3):
        assert np.array_equal(tile(pixels, row, 0, 96), images[row].permute(1, 2, 0).numpy())
        views = [tile(pixels, row, column, 96) for column in range(1, 5)]
        assert all(not np.array_equal(views[0], other) for other in views[1:])


@pytest.mark.parametrize("channels", [1, 3])
def test_small_images_are_enlarged_by_nearest_neighbour(channels):
    images = torch.randint(0, 256, (2, channels, 28, 28), dtype=torch.uint8)

    def augment(x, generator, extents):
        return crop_flip(x, 28, generator, crop_scale=(1.0, 1.0), flip_p=0.0, extents=extents)

    grid = augmentation_grid(images, augment, 2, torch.Generator().manual_seed(0), min_tile=96)
    pixels = np.asarray(grid)
    zoom = 4  # ceil(96 / 28)
    expected = images[1].repeat_interleave(zoom, 1).repeat_interleave(zoom, 2)
    expected = expected.expand(3, -1, -1).permute(1, 2, 0).numpy()
    for column in range(3):  # crop_flip of the whole image without flips is the original
        assert np.array_equal(tile(pixels, 1, column, 28 * zoom), expected)
