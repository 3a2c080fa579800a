"""``simclrv2 predict``: one CSV row per image of a folder, with the class names the model carries,
computed as PyTorch computes them, and undecodable files listed as such."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image

from simclrv2.cli import main
from simclrv2.data import load_dataset
from simclrv2.export import ExportedModel, save_exported
from simclrv2.models import LinearClassifier, ProjectionHead, build_encoder

CLASSES = ["cat", "dog", "owl"]


@pytest.fixture
def classifier(tmp_path):
    torch.manual_seed(0)
    encoder = build_encoder("r18_0.125x_sk0", 28, 1, zero_init_residual=False)
    head = ProjectionHead(encoder.out_dim, num_layers=2, out_dim=8)
    info = {"classes": CLASSES, "data": {"image_size": 28}}
    model = ExportedModel(encoder, head, LinearClassifier(head.output_dim(1), 3), 1, info)
    return save_exported(model, tmp_path / "model"), model


@pytest.fixture
def folder(tmp_path):
    """Grey 40x30 PNGs of any size in two class folders, and one file that is no image."""
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, (30, 40), dtype=np.uint8)
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    (tmp_path / "images" / "b" / "broken.png").write_bytes(b"not a png")
    return tmp_path / "images"


def test_predict_writes_a_row_per_image_as_pytorch_computes_it(classifier, folder, tmp_path):
    directory, model = classifier
    out = tmp_path / "predictions.csv"
    with pytest.warns(UserWarning, match="skipped 1 images"):
        assert (
            main(
                [
                    "predict",
                    "--model",
                    str(directory),
                    "--data",
                    str(folder),
                    "--out",
                    str(out),
                    "--top-k",
                    "2",
                ]
            )
            == 0
        )
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7 and rows[-1]["file"] == "b/broken.png"
    assert rows[-1]["top_k"].startswith("undecodable:") and rows[-1]["predicted"] == ""
    data = load_dataset(f"folder:{folder}", "train", image_size=28).with_channels(1)  # the model's
    with torch.no_grad():
        expected = model.classifier_model().eval()(data.images.float() / 255).softmax(1)
    for row, probabilities in zip(rows[:-1], expected):
        assert row["predicted"] == CLASSES[int(probabilities.argmax())]
        assert float(row["probability"]) == pytest.approx(float(probabilities.max()), abs=1e-3)
        ranked = [entry.split(":") for entry in row["top_k"].split()]
        assert len(ranked) == 2 and ranked[0][0] == row["predicted"]
        assert float(ranked[0][1]) >= float(ranked[1][1])
    assert {row["label"] for row in rows[:-1]} == {"a", "b"}  # the folder's own class names


def test_predict_needs_a_classifier(tmp_path, folder, capsys):
    encoder = build_encoder("r18_0.125x_sk0", 28, 1)
    save_exported(ExportedModel(encoder), tmp_path / "encoder")
    argv = ["predict", "--model", str(tmp_path / "encoder"), "--data", str(folder)]
    assert main([*argv, "--out", str(tmp_path / "p.csv")]) == 2
    assert "has no classifier" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()
