from importlib.resources import files

import pytest
import torch

from simclrv2.data import load_dataset
from simclrv2.data.embedded import PER_CLASS, asset_name, build_embedded
from simclrv2.data.idx import FASHION_MNIST_CLASSES
from simclrv2.errors import UserError

ASSETS = files("simclrv2") / "assets"


@pytest.mark.parametrize("split", ["train", "test"])
def test_embedded_split_is_class_balanced_fashion_mnist(split):
    data = load_dataset(None, split)
    assert data.images.shape == (10 * PER_CLASS[split], 1, 28, 28)
    assert data.images.dtype == torch.uint8
    assert data.labels.bincount().tolist() == [PER_CLASS[split]] * 10
    assert data.classes == list(FASHION_MNIST_CLASSES)
    assert torch.equal(load_dataset("embedded", split).images, data.images)


def test_embedded_assets_are_small_and_carry_the_licence():
    sizes = [
        (ASSETS / asset_name(split, kind)).stat().st_size
        for split in PER_CLASS
        for kind in ("images", "labels")
    ]
    assert sum(sizes) <= 6_000_000
    licence = (ASSETS / "fashion-mnist-LICENSE.txt").read_text()
    assert "Zalando SE" in licence
    assert "Permission is hereby granted, free of charge" in licence


def test_rgb_option_repeats_the_grey_channel():
    data = load_dataset(None, "test", rgb=True)
    assert data.images.shape == (2000, 3, 28, 28)
    assert torch.equal(data.images[:, 0], data.images[:, 2])
    assert torch.equal(data.images[:, :1], load_dataset(None, "test").images)


def test_embedded_has_no_unlabeled_split():
    with pytest.raises(UserError, match="valid splits: train, test"):
        load_dataset(None, "unlabeled")


def _items(data):
    """Each (image bytes, label) pair of a data set."""
    rows = data.images.reshape(len(data), -1).numpy()
    return {(row.tobytes(), label) for row, label in zip(rows, data.labels.tolist())}


@pytest.mark.parametrize("split", ["train", "test"])
def test_embedded_images_and_labels_come_from_the_real_set(shared_dir, split):
    real = load_dataset(str(shared_dir / "data" / "fashion-mnist"), split)
    assert _items(load_dataset(None, split)) <= _items(real)


@pytest.mark.slow
def test_build_embedded_reproduces_the_shipped_files(shared_dir, tmp_path):
    build_embedded(shared_dir / "data" / "fashion-mnist", tmp_path)
    for split in PER_CLASS:
        shipped, rebuilt = load_dataset(None, split), load_dataset(f"idx:{tmp_path}", split)
        assert torch.equal(rebuilt.images, shipped.images)
        assert torch.equal(rebuilt.labels, shipped.labels)
