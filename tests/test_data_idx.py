import gzip
import struct

import numpy as np
import pytest
import torch

from simclrv2.data import load_dataset
from simclrv2.data.idx import FASHION_MNIST_CLASSES, KMNIST_CLASSES
from simclrv2.errors import UserError


def idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    """The IDX layout written from its definition: 00 00 type rank, big-endian sizes, data."""
    header = bytes([0, 0, type_byte, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_split(directory, stem, images, labels, gz=True):
    directory.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    pack = gzip.compress if gz else bytes
    (directory / f"{stem}-images-idx3-ubyte{suffix}").write_bytes(pack(idx_bytes(images)))
    (directory / f"{stem}-labels-idx1-ubyte{suffix}").write_bytes(pack(idx_bytes(labels)))


def random_split(n, seed, side=28):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    return images, rng.integers(0, 10, n, dtype=np.uint8)


@pytest.mark.parametrize("gz", [True, False])
def test_reads_both_splits_gzipped_or_raw(tmp_path, gz):
    train, test = random_split(12, 0), random_split(5, 1)
    write_split(tmp_path / "mnist", "train", *train, gz=gz)
    write_split(tmp_path / "mnist", "t10k", *test, gz=gz)
    for split, (images, labels) in (("train", train), ("test", test)):
        data = load_dataset(str(tmp_path / "mnist"), split)
        assert data.images.dtype == torch.uint8
        assert data.images.shape == (len(images), 1, 28, 28)
        assert torch.equal(data.images[:, 0], torch.from_numpy(images))
        assert data.labels.dtype == torch.int64
        assert data.labels.tolist() == labels.tolist()
        assert data.classes == [str(k) for k in range(int(labels.max()) + 1)]


def test_class_names_follow_the_folder_name_and_prefixed_files(tmp_path):
    write_split(tmp_path / "fashion-mnist", "train", *random_split(10, 0))
    write_split(tmp_path / "kmnist", "train", *random_split(10, 0))
    write_split(tmp_path / "emnist", "emnist-digits-train", *random_split(10, 0))
    assert load_dataset(str(tmp_path / "fashion-mnist")).classes == list(FASHION_MNIST_CLASSES)
    assert load_dataset(f"idx:{tmp_path / 'kmnist'}").classes == list(KMNIST_CLASSES)
    assert len(load_dataset(str(tmp_path / "emnist"))) == 10


def test_torchvision_layout_prefers_the_raw_copy(tmp_path):
    images, labels = random_split(6, 2)
    raw = tmp_path / "FashionMNIST" / "raw"
    write_split(raw, "train", images, labels, gz=False)
    (raw / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8bnot really gzip")
    data = load_dataset(str(tmp_path / "FashionMNIST"))
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))


def test_unknown_split_lists_the_valid_ones(tmp_path):
    write_split(tmp_path, "train", *random_split(4, 0))
    with pytest.raises(UserError, match="no split 'unlabeled'; valid splits: train, test"):
        load_dataset(str(tmp_path), "unlabeled")


def corrupt(tmp_path, name, content):
    write_split(tmp_path, "train", *random_split(4, 0), gz=False)
    (tmp_path / name).write_bytes(content)
    return tmp_path / name


IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
BAD_FILES = {
    "wrong magic": (IMAGES, b"\x08\x03\x00\x00" + bytes(100), "not an IDX file"),
    "labels magic for images": (
        IMAGES,
        idx_bytes(np.zeros(4, np.uint8)),
        "expected unsigned-byte images",
    ),
    "images magic for labels": (
        LABELS,
        idx_bytes(np.zeros((4, 2, 2), np.uint8)),
        "expected unsigned-byte labels",
    ),
    "int32 labels": (LABELS, idx_bytes(np.zeros(4, np.int32), 0x0C), "found int32"),
    "truncated data": (IMAGES, idx_bytes(np.zeros((4, 28, 28), np.uint8))[:-1], "size mismatch"),
    "extra data": (IMAGES, idx_bytes(np.zeros((4, 28, 28), np.uint8)) + b"\0", "size mismatch"),
    "header claiming terabytes": (
        IMAGES,
        bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 28, 28),
        "size mismatch",
    ),
    "truncated header": (IMAGES, bytes([0, 0, 8, 3, 0, 0]), "truncated IDX header"),
    "count mismatch": (LABELS, idx_bytes(np.zeros(5, np.uint8)), "5 labels for the 4 images"),
    "non-square": (IMAGES, idx_bytes(np.zeros((4, 28, 20), np.uint8)), "28x20 px"),
    "corrupt gzip": (
        IMAGES,
        gzip.compress(idx_bytes(np.zeros((4, 28, 28), np.uint8)))[:-30],
        "corrupt gzip",
    ),
}


@pytest.mark.parametrize("case", BAD_FILES)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, case):
    name, content, problem = BAD_FILES[case]
    path = corrupt(tmp_path, name, content)
    with pytest.raises(UserError, match=problem) as error:
        load_dataset(str(tmp_path))
    assert str(path) in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_files_are_named(tmp_path):
    write_split(tmp_path, "train", *random_split(4, 0))
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match="no train labels-idx1-ubyte file"):
        load_dataset(str(tmp_path))
    with pytest.raises(UserError, match="does not exist"):
        load_dataset(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no MNIST-style IDX files"):
        load_dataset(f"idx:{tmp_path / 'empty'}")


def test_real_fashion_mnist(shared_dir):
    folder = shared_dir / "data" / "fashion-mnist"
    train, test = load_dataset(str(folder), "train"), load_dataset(str(folder), "test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.images.shape[1:] == (1, 28, 28)
    assert train.classes == list(FASHION_MNIST_CLASSES)
    assert train.labels.bincount().tolist() == [6000] * 10
    assert test.labels.bincount().tolist() == [1000] * 10
    raw = gzip.decompress((folder / "t10k-images-idx3-ubyte.gz").read_bytes())
    expected = np.frombuffer(raw, np.uint8, offset=16).reshape(10_000, 28, 28)
    assert torch.equal(test.images[:, 0], torch.from_numpy(expected.copy()))
    raw = gzip.decompress((folder / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert test.labels.tolist() == list(raw[8:])
