"""Whole images: folders store each image whole on a square with its extent, random crops are cut in
each image's own coordinates (SPEC's area and aspect rules relative to the image, against a plain
Python port of each sampler), and evaluation takes the centre of the original's shorter side."""

import math
import random

import numpy as np
import pytest
import torch
from PIL import Image

from simclrv2.augment import SimCLRAugment, center_crop, crop_flip, resized_crops
from simclrv2.augment.crops import sample_crop_boxes
from simclrv2.data import epoch_batches, load_dataset
from simclrv2.data.dataset import ImageDataset, concatenate
from test_augment import bin_counts, tf_generate_random_crop

EXTENTS = [(100, 400), (400, 100), (64, 64), (37, 250)]  # (height, width), wide and tall


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Heights and widths (n,) cycling through EXTENTS."""
    sides = torch.tensor(EXTENTS).repeat(-(-n // len(EXTENTS)), 1)[:n]
    return sides[:, 0], sides[:, 1]


@pytest.mark.parametrize("sampler", ["area", "tf"])
def test_each_box_is_the_one_its_own_image_would_get(sampler):
    # every draw has one row per image, so row i of a mixed batch is row i of a batch of images
    # all of image i's size: crops are sampled in each image's own coordinates
    n = 400
    height, width = mixed(n)
    boxes = sample_crop_boxes(n, height, width, gen(5), sampler=sampler)
    for h, w in EXTENTS:
        alone = sample_crop_boxes(n, h, w, gen(5), sampler=sampler)
        rows = (height == h) & (width == w)
        assert torch.equal(boxes[rows], alone[rows])
    assert ((boxes[:, 0] + boxes[:, 2] <= height) & (boxes[:, 1] + boxes[:, 3] <= width)).all()


def area_sampler_port(rng: random.Random, height: int, width: int) -> tuple[int, int]:
    """The paper's sampler (docs/facts.md) for one image, plain Python: (h, w) of the crop."""
    for _ in range(100):
        area = height * width * rng.uniform(0.08, 1.0)
        aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return h, w
    if width / height < 3 / 4:
        return round(width / (3 / 4)), width
    return (height, round(height * 4 / 3)) if width / height > 4 / 3 else (height, width)


def tf_sampler_port(rng: random.Random, height: int, width: int) -> tuple[int, int]:
    return tf_generate_random_crop(rng, width, height)


@pytest.mark.parametrize(
    ("sampler", "port"), [("area", area_sampler_port), ("tf", tf_sampler_port)]
)
def test_areas_and_aspects_relative_to_each_whole_image_match_a_port(sampler, port):
    n = 16_000
    height, width = mixed(n)
    boxes = sample_crop_boxes(n, height, width, gen(0), sampler=sampler).double()
    rng = random.Random(0)
    for h, w in EXTENTS:
        rows = (height == h) & (width == w)
        ours = boxes[rows]
        theirs = torch.tensor([port(rng, h, w) for _ in range(int(rows.sum()))]).double()
        for values, expected, edges in [
            (ours[:, 2] * ours[:, 3] / (h * w), theirs[:, 0] * theirs[:, 1] / (h * w), 10),
            (torch.log(ours[:, 3] / ours[:, 2]), torch.log(theirs[:, 1] / theirs[:, 0]), 10),
        ]:
            bins = np.linspace(float(expected.min()) - 1e-9, float(expected.max()) + 1e-9, edges)
            m = len(values)
            p = bin_counts(expected, bins) / m
            for count, q in zip(bin_counts(values, bins), p):
                assert abs(count - m * q) <= 5 * math.sqrt(2 * m * q * (1 - q)) + 2


def save(path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_a_wide_image_is_stored_whole_and_its_edges_appear_in_crops(tmp_path):
    # the check: a 400 x 100 image whose left quarter is red gave no crop with any red
    wide = np.full((100, 400, 3), 128, np.uint8)
    wide[:, :100] = (255, 0, 0)
    save(tmp_path / "wide.png", wide)
    data = load_dataset(str(tmp_path), image_size=32, workers=1)
    assert data.image_size == 32 and data.stored_size == 49  # ceil(32 * 8/7 * 4/3)
    assert data.extents.tolist() == [[12, 49]]  # 100 x 400 with its longer side at 49
    stored = data.images[0]
    assert (stored[0, :12, :11] == 255).all() and (stored[:, 12:] == 0).all()
    augment = SimCLRAugment(size=32, jitter_p=0, grayscale_p=0, blur=False)
    batch = next(epoch_batches(data, 1, seed=0, epoch=0))
    views = torch.cat([augment(batch.images, gen(k), batch.extents) for k in range(200)])
    red = ((views[:, 0] > 0.9) & (views[:, 1] < 0.1)).flatten(1).any(1).float().mean()
    assert 0.2 < red < 0.9  # crops left of centre show it; others do not
    assert not (views < 0.4).all(dim=(1, 2, 3)).any()  # no view reads the black padding


def test_stored_side_keeps_a_4_3_photographs_shorter_side_at_size_over_0_875(tmp_path):
    save(tmp_path / "photo.jpg", np.full((480, 640, 3), 90, np.uint8))
    save(tmp_path / "small.png", np.full((20, 30, 3), 90, np.uint8))  # never enlarged
    data = load_dataset(str(tmp_path), image_size=224, workers=1)
    by_name = dict(zip(data.names, data.extents.tolist()))
    assert by_name == {"photo.jpg": [256, 342], "small.png": [20, 30]}
    assert data.stored_size == 342 and data.image_size == 224
    (tmp_path / "photo.jpg").unlink()  # the folder's largest image sets the square
    assert load_dataset(str(tmp_path), image_size=224, workers=1).stored_size == 30


def test_evaluation_takes_the_centre_87_5_percent_of_the_original_shorter_side():
    canvas = torch.randint(0, 256, (1, 3, 400, 400), generator=gen(1), dtype=torch.uint8)
    extents = torch.tensor([[300, 400]])  # a 4:3 image on a 400 px square
    view = center_crop(canvas, 224, extents=extents)
    side = round(0.875 * 300)  # 262
    box = torch.tensor([[(300 - side + 1) // 2, (400 - side + 1) // 2, side, side]])
    assert torch.equal(view, resized_crops(canvas, box, 224))
    padded = canvas.clone()
    padded[:, :, 300:] = 0  # what lies outside the image is never read, by any crop
    assert torch.equal(center_crop(padded, 224, extents=extents), view)
    for seed in range(3):
        ours = crop_flip(canvas, 64, gen(seed), extents=extents)
        assert torch.equal(crop_flip(padded, 64, gen(seed), extents=extents), ours)


def test_concatenated_folders_share_the_largest_square_and_keep_extents():
    small = ImageDataset(
        torch.full((2, 3, 10, 10), 7, dtype=torch.uint8),
        extents=torch.tensor([[10, 6], [4, 10]]),
        view_size=8,
    )
    array = ImageDataset(torch.full((1, 3, 8, 8), 9, dtype=torch.uint8))
    both = concatenate([small, array], [])
    assert both.stored_size == 10 and both.image_size == 8
    assert both.extents.tolist() == [[10, 6], [4, 10], [8, 8]]
    assert (both.images[2, :, :8, :8] == 9).all() and (both.images[2, :, 8:] == 0).all()
    assert both.subset([2, 0]).extents.tolist() == [[8, 8], [10, 6]]
