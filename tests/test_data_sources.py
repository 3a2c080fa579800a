import io
import tarfile

import pytest
import torch

from simclrv2.data import load_dataset
from simclrv2.data.sources import parse_source
from simclrv2.errors import UserError


def touch(path, data=b""):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


LAYOUTS = {  # files (empty: detection reads names only) -> the format they must be read as
    "idx": ["mnist/train-images-idx3-ubyte.gz", "mnist/train-labels-idx1-ubyte.gz"],
    "idx-raw": ["FashionMNIST/raw/t10k-images-idx3-ubyte"],
    "stl10": ["stl/stl10_binary/unlabeled_X.bin"],
    "stl10-inner": ["stl10_binary/train_X.bin"],
    "cifar10": ["data/cifar-10-batches-py/batches.meta"],
    "cifar10-inner": ["cifar-10-batches-py/test_batch"],
    "cifar100": ["c100/meta", "c100/test"],
    "folder": ["pics/cat/1.jpg"],
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_format_is_detected_from_the_contents(tmp_path, layout):
    for name in LAYOUTS[layout]:
        touch(tmp_path / name)
    top = LAYOUTS[layout][0].split("/")[0]
    kind, path = parse_source(str(tmp_path / top))
    assert kind == layout.split("-")[0]
    assert path == tmp_path / top


def test_archives_are_detected_by_their_top_folder(tmp_path):
    for folder, kind in (("cifar-10-batches-py", "cifar10"), ("cifar-100-python", "cifar100")):
        archive = tmp_path / f"{kind}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            member = tarfile.TarInfo(f"{folder}/meta")
            member.size = 1
            tar.addfile(member, io.BytesIO(b"x"))
        assert parse_source(str(archive)) == (kind, archive)
    with pytest.raises(UserError, match=r"is a file but neither a CSV .* nor a CIFAR .tar.gz"):
        parse_source(str(touch(tmp_path / "notes.txt", b"hello")))


def test_prefix_overrides_detection_and_other_colons_are_paths(tmp_path):
    touch(tmp_path / "train-images-idx3-ubyte")
    assert parse_source(f"folder:{tmp_path}") == ("folder", tmp_path)
    assert parse_source(f"stl10:{tmp_path}") == ("stl10", tmp_path)
    assert parse_source(None) == parse_source("embedded") == ("embedded", None)
    with pytest.raises(UserError, match=r"C:\\data does not exist"):
        parse_source("C:\\data")
    with pytest.raises(UserError, match="does not exist"):
        parse_source(f"cifar10:{tmp_path / 'missing.tar.gz'}")


def test_image_size_and_rgb_apply_to_array_formats():
    data = load_dataset("embedded", "test", image_size=32, rgb=True)
    assert data.images.shape == (2000, 3, 32, 32)
    original = load_dataset("embedded", "test")
    assert torch.equal(data.labels, original.labels)
    mean_change = (data.images[:, 0].float().mean() - original.images.float().mean()).abs()
    assert mean_change < 2  # the same pictures, only resampled
