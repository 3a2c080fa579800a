"""Decoding keeps what the images are: grey stays one channel, 16-bit keeps its range (scaled,
never clamped), TIFF stacks keep every band, through pretraining, fine-tuning and embedding."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_OVERRIDES
from simclrv2.cli import main
from simclrv2.data import load_dataset
from simclrv2.data.decode import decode_image
from simclrv2.errors import UserError

tifffile = pytest.importorskip("tifffile")


def gradient16(height=8, width=256, top=65535) -> np.ndarray:
    """A horizontal uint16 gradient over 0..top."""
    row = np.round(np.linspace(0, top, width)).astype(np.uint16)
    return np.tile(row, (height, 1))


def test_a_16_bit_png_keeps_its_whole_range(tmp_path):
    path = tmp_path / "ramp.png"
    Image.fromarray(gradient16()).save(path)  # Pillow writes a 16-bit grey PNG
    with Image.open(path) as image:
        assert image.mode.startswith("I")
    decoded = decode_image(path, 256, channels=1)  # the whole 8 x 256 ramp, as it is
    assert decoded.shape == (1, 8, 256) and decoded.dtype == np.uint8
    assert 100 < decoded.mean() < 155  # the middle of the range, not clamped to 255
    halved = decode_image(path, 128, channels=1)  # longer side at most 128: aspect kept
    assert halved.shape == (1, 4, 128) and 100 < halved.mean() < 155
    square = tmp_path / "square.png"
    Image.fromarray(gradient16(256, 256)).save(square)
    values = np.unique(decode_image(square, 256, channels=1))
    assert values.min() == 0 and values.max() == 255 and len(values) > 200


def test_12_bit_data_in_16_bit_files_stretch_with_image_scaling(tmp_path):
    path = tmp_path / "xray.png"
    Image.fromarray(gradient16(256, 256, top=4095)).save(path)
    full = decode_image(path, 64, channels=1, depth="full")
    own = decode_image(path, 64, channels=1, depth="image")
    assert full.max() <= 16  # 4095 of 65535: the type's range
    assert (
        own.min() <= 3 and own.max() >= 250
    )  # the image's own range (resampling softens the ends)


def test_a_grey_folder_is_one_channel_and_a_mixed_one_three(tmp_path):
    (tmp_path / "grey").mkdir()
    for i in range(3):
        Image.fromarray(np.full((12, 12), 40 * i, np.uint8)).save(tmp_path / "grey" / f"{i}.png")
    grey = load_dataset(str(tmp_path / "grey"), workers=1)
    assert grey.channels == 1 and grey.images[2].unique().tolist() == [80]
    Image.fromarray(np.zeros((12, 12, 3), np.uint8)).save(tmp_path / "grey" / "rgb.png")
    assert load_dataset(str(tmp_path / "grey"), workers=1).channels == 3


def write_stacks(root, classes=("field", "forest"), per_class=12, bands=5, side=24):
    """Multi-band uint16 TIFF tiles (bands, side, side), planar, a class per folder."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            tile = rng.integers(0, 2000, (bands, side, side)).astype(np.uint16)
            tile[k] += 30000  # a class shows in one band
            tifffile.imwrite(root / name / f"{i}.tif", tile, photometric="minisblack")
    return root


def test_tiff_stacks_keep_every_band(tmp_path):
    root = write_stacks(tmp_path / "tiles")
    data = load_dataset(str(root), workers=1)
    assert data.channels == 5 and data.images.shape[1:] == (5, 24, 24)
    first = tifffile.imread(root / "field" / "0.tif").astype(np.float64) * 255 / 65535
    assert torch.allclose(data.images[0].double(), torch.from_numpy(first).round(), atol=1)


def test_mixed_band_counts_are_a_one_line_error(tmp_path):
    root = write_stacks(tmp_path / "tiles")
    tifffile.imwrite(root / "field" / "odd.tif", np.zeros((4, 24, 24), np.uint16))
    with pytest.raises(UserError, match="4, 5 channels"):
        load_dataset(str(root), workers=1)


def test_c_band_data_through_pretrain_finetune_and_embed(tmp_path, capsys):
    root = write_stacks(tmp_path / "tiles")
    pre, ft = tmp_path / "pre", tmp_path / "ft"
    tiny = [*TINY_OVERRIDES, "pretrain.batch_size=8", "finetune.batch_size=8", "knn.k=4"]
    assert main(["pretrain", "--unlabelled", str(root), "--out", str(pre), *tiny]) == 0
    card = json.loads((pre / "model" / "model.json").read_text())
    assert card["encoder"]["in_channels"] == 5
    labelled = ["--labelled", str(root), "--init", str(pre / "model")]
    assert main(["finetune", *labelled, "--out", str(ft), *tiny]) == 0
    assert json.loads((ft / "results.json").read_text())["split"] == "validation"
    out = tmp_path / "h.npy"
    assert main(["embed", "--init", str(ft / "model"), "--data", str(root), "--out", str(out)]) == 0
    assert np.load(out).shape[0] == 24
