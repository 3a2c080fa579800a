"""The augmentation knobs for other domains (vertical flip, quarter turns, colour ops left out,
the crop area range, the output size): each does what it says, through the config too, and at
their defaults the views are SimCLR's."""

import math

import pytest
import torch

from simclrv2 import build
from simclrv2.augment import SimCLRAugment, crop_flip, resized_crops, to_grayscale
from simclrv2.cli import main
from simclrv2.config import AugmentConfig, load_config
from simclrv2.errors import UserError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def random_uint8(shape, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=gen(seed), dtype=torch.uint8)


def within_sampling_error(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1


# the whole image, no colour: what is left is the geometry under test
GEOMETRY = {"crop_scale": (1, 1), "jitter_p": 0, "grayscale_p": 0, "blur": False}


def test_vflip_at_one_flips_every_view_upside_down_exactly():
    images = random_uint8((64, 3, 8, 8), seed=1)
    views = SimCLRAugment(size=8, flip_p=0, vflip_p=1, **GEOMETRY)(images, gen(0))
    assert torch.equal(views, images.flip(2).float() / 255)
    half = SimCLRAugment(size=8, flip_p=0, vflip_p=0.5, **GEOMETRY)
    params = half.sample(4000, 8, 8, gen(1))
    assert within_sampling_error(int(params.vflip.sum()), 4000, 0.5)


@pytest.mark.parametrize("flip_p", [0.0, 0.5])
def test_rot90_turns_each_view_by_its_quarter_turns(flip_p):
    n = 400
    images = random_uint8((n, 1, 8, 8), seed=2)
    augment = SimCLRAugment(size=8, flip_p=flip_p, rot90=True, **GEOMETRY)
    params = augment.sample(n, 8, 8, gen(3))
    counts = torch.bincount(params.quarter_turns, minlength=4)
    assert all(within_sampling_error(c, n, 1 / 4) for c in counts.tolist())
    views = augment.apply(images, params)
    x = images.float() / 255
    for i in range(n):
        original = x[i].flip(2) if params.flip[i] else x[i]
        expected = torch.rot90(original, int(params.quarter_turns[i]), dims=(1, 2))
        assert torch.equal(views[i], expected)


def test_rotated_views_are_rotations_of_the_input_through_the_full_pipeline():
    images = random_uint8((200, 3, 8, 8), seed=4)
    views = SimCLRAugment(size=8, flip_p=0, rot90=True, **GEOMETRY)(images, gen(5))
    x = images.float() / 255
    turned = torch.stack([torch.rot90(x, k, dims=(2, 3)) for k in range(4)], 1)  # (N, 4, C, H, W)
    matches = (turned == views[:, None]).flatten(2).all(dim=2)  # (N, 4)
    assert matches.any(dim=1).all()
    assert matches.sum(dim=0).min() > 20  # every multiple of 90 degrees occurs


@pytest.mark.parametrize("channels", [1, 3])
def test_geometry_knobs_agree_on_the_blend_and_the_subset_paths(channels):
    images = random_uint8((24, channels, 20, 20), seed=6)
    augment = SimCLRAugment(size=16, vflip_p=0.5, rot90=True)
    params = augment.sample(24, 20, 20, gen(7))
    subset = augment.apply(images, params, subset=True)
    torch.testing.assert_close(
        augment.apply(images, params, subset=False), subset, atol=1e-6, rtol=0
    )


def test_without_colour_ops_the_views_are_crop_and_flip_only():
    images = random_uint8((32, 3, 24, 24), seed=8)
    no_colour = SimCLRAugment(size=16, jitter_p=0, grayscale_p=0, blur=False)
    assert torch.equal(no_colour(images, gen(9)), crop_flip(images, 16, gen(9)))
    no_ops = SimCLRAugment(size=16, jitter_p=1, jitter_ops=(), grayscale_p=0, blur=False)
    assert torch.equal(no_ops(images, gen(9)), crop_flip(images, 16, gen(9)))


def test_a_grey_only_pipeline_makes_every_view_grey_and_nothing_else():
    images = random_uint8((32, 3, 24, 24), seed=10)
    grey = SimCLRAugment(size=16, jitter_p=1, jitter_ops=(), grayscale_p=1, blur=False)
    assert torch.equal(grey(images, gen(11)), to_grayscale(crop_flip(images, 16, gen(11))))


def test_jitter_ops_left_out_never_run():
    images = random_uint8((32, 3, 24, 24), seed=12)
    augment = SimCLRAugment(
        size=16, jitter_p=1, jitter_ops=("brightness",), grayscale_p=0, blur=False
    )
    params = augment.sample(32, 24, 24, gen(13))
    crops = resized_crops(images, params.boxes, 16, params.flip)
    expected = (crops * params.factors[:, 0, None, None, None]).clamp(0, 1)
    assert torch.equal(augment.apply(images, params), expected)


def test_the_crop_area_range_is_respected_and_uniform():
    n, side = 20_000, 256
    augment = build.pretrain_augment(AugmentConfig(crop_min_area=0.3, crop_max_area=0.5), side)
    assert augment.crop_scale == (0.3, 0.5)
    boxes = augment.sample(n, side, side, gen(14)).boxes
    area = (boxes[:, 2] * boxes[:, 3]).double() / side**2
    slack = 2 / side  # w and h are rounded to whole pixels
    assert area.min() >= 0.3 - slack and area.max() <= 0.5 + slack
    assert within_sampling_error(int((area < 0.35).sum()), n, 0.25, sigmas=6)
    assert abs(area.mean().item() - 0.4) < 0.003


def test_the_output_size_is_the_data_side_unless_set():
    images = random_uint8((4, 1, 28, 28), seed=15)
    assert build.pretrain_augment(AugmentConfig(), 28)(images, gen(0)).shape == (4, 1, 28, 28)
    sized = build.pretrain_augment(AugmentConfig(size=40), 28)
    assert sized(images, gen(0)).shape == (4, 1, 40, 40)


def test_the_defaults_are_the_reference_views():
    assert build.pretrain_augment(AugmentConfig(), 224) == SimCLRAugment(size=224)
    demo = load_config("demo").augment
    assert build.pretrain_augment(demo, 28) == SimCLRAugment(
        size=28, jitter_strength=0.5, blur=False, brightness="v1"
    )
    # the new draws come after the reference's, and only when on: its stream is unchanged
    plain = SimCLRAugment(size=32).sample(64, 40, 40, gen(16))
    knobs = SimCLRAugment(size=32, vflip_p=0.5, rot90=True).sample(64, 40, 40, gen(16))
    for name in ("boxes", "flip", "jitter", "order", "factors", "grayscale", "blur", "sigma"):
        assert torch.equal(getattr(plain, name), getattr(knobs, name))
    assert not plain.vflip.any() and not plain.quarter_turns.any()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("augment.vflip=1.5", "augment.vflip must be in"),
        ("augment.jitter_p=-0.1", "augment.jitter_p must be in"),
        ("augment.crop_max_area=0", "augment.crop_max_area must be in"),
        ("augment.size=4", "augment.size must be >= 8"),
        ("augment.jitter_ops=[tint]", "choose one of brightness"),
        ("augment.crop_max_area=0.05", "crop_min_area .* is above augment.crop_max_area"),
    ],
)
def test_bad_knobs_are_one_line_errors(override, message):
    with pytest.raises(UserError, match=message):
        load_config("demo", overrides=[override])


def test_show_augmentations_draws_the_configured_knobs(tmp_path, capsys):
    from PIL import Image

    out = tmp_path / "grid.png"
    argv = ["show-augmentations", "--out", str(out), "--images", "2", "--views", "2"]
    knobs = ["augment.vflip=0.5", "augment.rot90=true", "augment.jitter_ops=[brightness]"]
    assert main([*argv, *knobs, "augment.size=40", "augment.grayscale_p=0"]) == 0
    printed = capsys.readouterr().out
    for shown in ("vflip_p=0.5", "rot90=True", "jitter_ops=('brightness',)", "size=40"):
        assert shown in printed
    assert "grayscale_p=0.0" in printed
    with Image.open(out) as grid:
        assert grid.size[1] == 2 + 2 * (40 * 3 + 2)  # two rows of 40 px views, enlarged 3x
