"""Where a model's input channels meet data: grey images into an RGB model (a converted authors'
checkpoint) are repeated to three channels, said once in the log; colour images into a grey model
are a one-line error naming both counts; grey images stored as RGB are grey."""

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY_OVERRIDES
from simclrv2.cli import main
from simclrv2.data import ImageDataset
from simclrv2.errors import UserError
from simclrv2.export import ExportedModel, load_encoder, match_channels, save_exported
from simclrv2.models import build_encoder

REPEATED = "grey images repeated to 3 channels"


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    """28 px random colour PNGs in two class folders, four of each in train/ and two in test/."""
    root = tmp_path_factory.mktemp("colour")
    rng = np.random.default_rng(0)
    for split, count in (("train", 4), ("test", 2)):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def grey_model(tmp_path_factory):
    torch.manual_seed(0)
    encoder = build_encoder("r18_0.125x_sk0", 28, in_channels=1)
    return save_exported(ExportedModel(encoder), tmp_path_factory.mktemp("grey") / "model")


def test_the_rule_on_data_sets():
    grey = ImageDataset(torch.randint(0, 256, (5, 1, 8, 8), dtype=torch.uint8))
    rgb = grey.with_channels(3)
    assert rgb.channels == 3 and torch.equal(rgb.images, grey.images.expand(-1, 3, -1, -1))
    assert rgb.is_grey() and torch.equal(rgb.with_channels(1).images, grey.images)  # exact
    colour = ImageDataset(torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8))
    assert not colour.is_grey() and colour.with_channels(3) is colour
    with pytest.raises(UserError, match=r"the images have 3 channels .* the model takes 1"):
        colour.with_channels(1)
    with pytest.raises(UserError, match="the images have 1 channels but the model takes 4"):
        grey.with_channels(4)
    assert match_channels(3, None, grey)[0] is None


def test_a_converted_rgb_checkpoint_on_grey_data_in_finetune_embed_distill_and_knn(
    converted_tf, tiny_data, tmp_path, capsys
):
    data = ["--data", str(tiny_data), *TINY_OVERRIDES]
    out = tmp_path / "ft"
    argv = ["finetune", "--init", str(converted_tf), "--labels", "2-per-class", "--out", str(out)]
    assert main([*argv, *data]) == 0
    assert capsys.readouterr().err.count(REPEATED) == 1  # the labelled and the test images
    assert REPEATED in (out / "log.txt").read_text()
    assert load_encoder(out / "model").spec.in_channels == 3
    for model in (converted_tf, out / "model"):
        h = tmp_path / "h.npy"
        argv = ["embed", "--init", str(model), "--split", "test", "--out", str(h)]
        assert main([*argv, *data]) == 0
        assert REPEATED in capsys.readouterr().err
        assert np.load(h).shape == (40, load_encoder(model).out_dim)
    argv = ["distill", "--teacher", str(out / "model"), "--out", str(tmp_path / "dist")]
    assert main([*argv, *data]) == 0
    assert load_encoder(tmp_path / "dist" / "model").spec.in_channels == 3  # the teacher's
    assert main(["knn", "--init", str(converted_tf), *data]) == 0
    assert REPEATED in capsys.readouterr().err


@pytest.mark.parametrize("command", ["embed", "finetune", "knn"])
def test_a_grey_model_on_colour_images_is_a_one_line_error(
    command, grey_model, colour_folder, tmp_path, capsys
):
    argv = [command, "--init", str(grey_model), "--data", f"folder:{colour_folder}"]
    if command == "embed":
        argv += ["--out", str(tmp_path / "h.npy")]
    if command == "finetune":
        argv += ["--labels", "2-per-class", "--out", str(tmp_path / "ft")]
    assert main([*argv, *TINY_OVERRIDES, "data.num_workers=1"]) == 2
    err = capsys.readouterr().err
    error = err.strip().splitlines()[-1]  # after the data's summary line, where there is one
    assert error.startswith("simclrv2: error: the images have 3 channels (colour)")
    assert "the model takes 1" in error and "Traceback" not in err
    assert not (tmp_path / "h.npy").exists() and not (tmp_path / "ft").exists()
