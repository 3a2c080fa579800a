import io
import os
import pickle
import struct
import tarfile
from typing import ClassVar

import numpy as np
import pytest
import torch

from simclrv2.data import load_dataset
from simclrv2.errors import UserError

CIFAR10_NAMES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


class Python2Pickler(pickle._Pickler):
    """Pickles as cPickle did under Python 2, which wrote the CIFAR files: every str and bytes as a
    Python 2 ``str`` (BINSTRING), so that keys, names and the array's raw data load as bytes."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_python2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_python2_str
    dispatch[bytes] = save_python2_str


def dumps(obj, protocol):
    """Pickle bytes; protocol "py2" gives the original files' form, numpy 1 module name included."""
    if protocol != "py2":
        return pickle.dumps(obj, protocol=protocol)
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def batch(n, seed, label_key=b"labels", classes=10):
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"training batch",
        label_key: [int(v) for v in rng.integers(0, classes, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"image_{seed}_{i}.png".encode() for i in range(n)],
    }


def write_cifar10(root, protocol="py2", per_batch=3):
    """cifar-10-batches-py/ as the download holds it; returns the batches by file name."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    files = {f"data_batch_{i}": batch(per_batch, i) for i in range(1, 6)} | {
        "test_batch": batch(4, 9)
    }
    files["batches.meta"] = {
        b"label_names": [n.encode() for n in CIFAR10_NAMES],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    for name, content in files.items():
        (folder / name).write_bytes(dumps(content, protocol))
    return files


def tar_gz(folder, archive_path, extra=()):
    with tarfile.open(archive_path, "w:gz") as archive:
        archive.add(folder, arcname=folder.name)
        for member, data in extra:
            archive.addfile(member, io.BytesIO(data) if data is not None else None)
    return archive_path


@pytest.mark.parametrize("protocol", ["py2", 2, 4, 5])
def test_cifar10_folder_in_every_pickle_form(tmp_path, protocol):
    files = write_cifar10(tmp_path, protocol)
    train = load_dataset(str(tmp_path / "cifar-10-batches-py"), "train")
    rows = np.concatenate([files[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert train.images.shape == (15, 3, 32, 32)
    assert torch.equal(
        train.images[:, 0].reshape(15, -1), torch.from_numpy(rows[:, :1024])
    )  # R plane
    assert torch.equal(
        train.images[:, 2].reshape(15, -1), torch.from_numpy(rows[:, 2048:])
    )  # B plane
    labels = [label for i in range(1, 6) for label in files[f"data_batch_{i}"][b"labels"]]
    assert train.labels.tolist() == labels
    assert train.classes == CIFAR10_NAMES
    test = load_dataset(str(tmp_path), "test")
    assert test.names == [f"image_9_{i}.png" for i in range(4)]
    assert test.labels.tolist() == files["test_batch"][b"labels"]


def test_archive_reads_the_same_without_extracting(tmp_path):
    write_cifar10(tmp_path / "src")
    archive = tar_gz(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz")
    before = sorted(tmp_path.rglob("*"))
    for split in ("train", "test"):
        packed, unpacked = (
            load_dataset(str(archive), split),
            load_dataset(f"cifar10:{tmp_path / 'src'}", split),
        )
        assert torch.equal(packed.images, unpacked.images)
        assert torch.equal(packed.labels, unpacked.labels)
    assert sorted(tmp_path.rglob("*")) == before


def test_cifar100_uses_the_fine_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    fine = [f"fine{i}".encode() for i in range(100)]
    content = batch(6, 1, b"fine_labels", 100) | {b"coarse_labels": [0] * 6}
    (folder / "train").write_bytes(dumps(content, "py2"))
    (folder / "test").write_bytes(
        dumps(batch(2, 2, b"fine_labels", 100) | {b"coarse_labels": [1] * 2}, "py2")
    )
    (folder / "meta").write_bytes(
        dumps({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, "py2")
    )
    train = load_dataset(str(tmp_path))
    assert train.labels.tolist() == content[b"fine_labels"]
    assert train.num_classes == 100
    assert len(load_dataset(f"cifar100:{folder}", "test")) == 2
    with pytest.raises(UserError, match="valid splits: train, test"):
        load_dataset(str(folder), "unlabeled")


class Payload:
    """Unpickling this would create a directory: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def test_malicious_pickle_is_refused_before_it_runs(tmp_path):
    write_cifar10(tmp_path / "data")
    marker = tmp_path / "code-ran"
    evil = pickle.dumps({b"data": Payload(marker), b"labels": []}, protocol=2)
    (tmp_path / "data" / "cifar-10-batches-py" / "test_batch").write_bytes(evil)
    with pytest.raises(
        UserError, match=r"test_batch: not a CIFAR batch \(refused to load the global posix.mkdir\)"
    ):
        load_dataset(str(tmp_path / "data"), "test")
    archive = tar_gz(tmp_path / "data" / "cifar-10-batches-py", tmp_path / "evil.tar.gz")
    with pytest.raises(UserError, match="refused to load the global"):
        load_dataset(str(archive), "test")
    assert not marker.exists()


def test_archive_links_are_refused_and_escaping_paths_never_written(tmp_path):
    write_cifar10(tmp_path / "src")
    folder = tmp_path / "src" / "cifar-10-batches-py"
    escaping = [tarfile.TarInfo("../escaped.txt"), tarfile.TarInfo("/tmp/absolute-escape.txt")]
    for member in escaping:
        member.size = 4
    archive = tar_gz(folder, tmp_path / "a.tar.gz", [(m, b"evil") for m in escaping])
    assert len(load_dataset(str(archive), "test")) == 4
    assert (
        not (tmp_path / "escaped.txt").exists() and not (tmp_path.parent / "escaped.txt").exists()
    )
    (folder / "test_batch").unlink()
    link = tarfile.TarInfo("cifar-10-batches-py/test_batch")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    archive = tar_gz(folder, tmp_path / "b.tar.gz", [(link, None)])
    with pytest.raises(
        UserError, match="member cifar-10-batches-py/test_batch is not a regular file"
    ):
        load_dataset(str(archive), "test")


def test_bad_cifar_files_are_one_line_errors(tmp_path):
    files = write_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "data_batch_3").unlink()
    with pytest.raises(UserError, match="data_batch_3 is missing"):
        load_dataset(str(tmp_path), "train")
    (folder / "test_batch").write_bytes(dumps(files["test_batch"], 2)[:-100])
    with pytest.raises(UserError, match="test_batch: not a CIFAR batch"):
        load_dataset(str(tmp_path), "test")
    wrong = files["test_batch"] | {b"data": np.zeros((4, 1024), np.uint8)}
    (folder / "test_batch").write_bytes(dumps(wrong, 2))
    with pytest.raises(
        UserError, match=r"'data' must be uint8 \(N, 3072\).*found uint8 \(4, 1024\)"
    ):
        load_dataset(str(tmp_path), "test")
    wrong = files["test_batch"] | {b"labels": [1, 2]}
    (folder / "test_batch").write_bytes(dumps(wrong, 2))
    with pytest.raises(UserError, match="2 labels for 4 images"):
        load_dataset(str(tmp_path), "test")
    (tmp_path / "broken.tar.gz").write_bytes(b"\x1f\x8b" + bytes(50))
    with pytest.raises(UserError, match=r"broken.tar.gz"):
        load_dataset(f"cifar10:{tmp_path / 'broken.tar.gz'}", "test")
