import numpy as np
import pytest
import torch

from simclrv2.data import epoch_batches, load_dataset
from simclrv2.errors import UserError

CLASSES = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
COUNTS = {"train": 3, "test": 2, "unlabeled": 4}


def column_major(images):
    """STL-10's layout: per image the R, G, B planes, each written column by column."""
    return b"".join(plane.tobytes(order="F") for image in images for plane in image)


def write_stl10(root):
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    expected = {}
    for split, n in COUNTS.items():
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        (folder / f"{split}_X.bin").write_bytes(column_major(images))
        labels = rng.integers(1, 11, n, dtype=np.uint8)
        if split != "unlabeled":
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        expected[split] = images, labels
    (folder / "class_names.txt").write_text("\n".join(CLASSES) + "\n")
    return expected


@pytest.mark.parametrize("split", list(COUNTS))
def test_reads_every_split_row_major(tmp_path, split):
    images, labels = write_stl10(tmp_path)[split]
    data = load_dataset(str(tmp_path), split)
    assert data.images.shape == (COUNTS[split], 3, 96, 96)
    assert torch.equal(data.images, torch.from_numpy(images))
    assert data.classes == CLASSES
    if split == "unlabeled":
        assert data.labels.tolist() == [-1] * COUNTS[split]
    else:
        assert data.labels.tolist() == (labels.astype(int) - 1).tolist()


def test_batches_from_the_memory_map(tmp_path):
    images, _ = write_stl10(tmp_path)["unlabeled"]
    data = load_dataset(f"stl10:{tmp_path / 'stl10_binary'}", "unlabeled")
    batch = next(epoch_batches(data, 4, seed=0, epoch=0, shuffle=False)).images
    assert batch.is_contiguous()
    assert torch.equal(batch, torch.from_numpy(images))


def test_bad_stl10_files(tmp_path):
    write_stl10(tmp_path)
    folder = tmp_path / "stl10_binary"
    with pytest.raises(UserError, match="valid splits: train, test, unlabeled"):
        load_dataset(str(tmp_path), "val")
    (folder / "test_y.bin").write_bytes(bytes([1, 11]))
    with pytest.raises(UserError, match=r"test_y.bin: labels outside 1..10"):
        load_dataset(str(tmp_path), "test")
    (folder / "test_y.bin").write_bytes(bytes([1]))
    with pytest.raises(UserError, match=r"test_y.bin: 1 labels for the 2 images"):
        load_dataset(str(tmp_path), "test")
    (folder / "test_y.bin").unlink()
    with pytest.raises(UserError, match=r"test_y.bin is missing"):
        load_dataset(str(tmp_path), "test")
    with open(folder / "train_X.bin", "ab") as file:
        file.write(b"\0")
    with pytest.raises(UserError, match=r"train_X.bin: 82945 bytes is not a whole number"):
        load_dataset(str(tmp_path), "train")
