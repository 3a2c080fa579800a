"""MNIST-style IDX files (Fashion-MNIST, MNIST, KMNIST, EMNIST), gzipped or raw.

An IDX file is a 4-byte magic number ``00 00 <type> <ndim>``, ``ndim`` big-endian uint32 sizes,
then the values, big-endian, row-major. Images are type 0x08 (unsigned byte) with 3 dimensions
(magic 0x00000803, data from byte 16), labels type 0x08 with 1 dimension (0x00000801, data from
byte 8). Gzip is recognised by its own magic bytes, whatever the file is called.
"""

from __future__ import annotations

import gzip
import re
import struct
import zlib
from math import prod
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from simclrv2.data.dataset import ImageDataset, check_split
from simclrv2.errors import UserError

# IDX type byte -> numpy dtype (big-endian), from the format's definition (LeCun et al.)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
UBYTE = 0x08
GZIP_MAGIC = b"\x1f\x8b"
READ_PIECE = 1 << 24  # bytes per read

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
# file-name stems of each split: "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte", and
# prefixed or dotted variants ("emnist-letters-test-images-idx3-ubyte", "train-images.idx3-ubyte")
SPLIT_STEMS = {"train": ("train",), "test": ("t10k", "test")}


def _open(path: Path) -> BinaryIO:
    """``path`` opened for reading, decompressing on the fly if it starts with the gzip magic."""
    try:
        file = path.open("rb")
    except OSError as error:
        raise UserError(f"{path}: cannot open ({error.strerror}); check the data path") from None
    if file.read(2) == GZIP_MAGIC:
        file.close()
        return gzip.open(path, "rb")
    file.seek(0)
    return file


def _read_at_most(file: BinaryIO, size: int) -> bytearray:
    """Up to ``size`` bytes, read in pieces so that a damaged header claiming terabytes fails on
    the short data instead of on allocating it; a writable buffer numpy can wrap."""
    data = bytearray()
    while len(data) < size and (piece := file.read(min(READ_PIECE, size - len(data)))):
        data += piece
    return data


def read_idx(path: Path) -> np.ndarray:
    """The array stored in one IDX file, in native byte order; a one-line error if it is not one."""
    try:
        with _open(path) as file:
            magic = file.read(4)
            if len(magic) < 4 or magic[:2] != b"\0\0" or magic[2] not in IDX_TYPES:
                raise UserError(
                    f"{path}: not an IDX file (magic number {magic.hex() or 'missing'}, expected "
                    "0000 then a type byte and a rank byte); pass the MNIST-style -ubyte files"
                )
            ndim = magic[3]
            header = file.read(4 * ndim)
            if len(header) < 4 * ndim:
                raise UserError(f"{path}: truncated IDX header; download the file again")
            shape = struct.unpack(f">{ndim}I", header)
            dtype = np.dtype(IDX_TYPES[magic[2]])
            expected = prod(shape) * dtype.itemsize
            data = _read_at_most(file, expected)
            extra = len(file.read(1))
    except (OSError, EOFError, zlib.error) as error:
        raise UserError(f"{path}: corrupt gzip data ({error}); download the file again") from None
    if len(data) < expected or extra:
        found = "fewer" if len(data) < expected else "more"
        raise UserError(
            f"{path}: size mismatch: the header gives shape {shape} ({expected} bytes of data) but "
            f"the file holds {found}; the file is truncated or not what its header says"
        )
    return np.frombuffer(data, dtype).reshape(shape).astype(dtype.newbyteorder("="), copy=False)


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an IDX file; gzipped, without a timestamp, if ``path`` ends in .gz."""
    if array.dtype != np.uint8:
        raise ValueError(f"write_idx writes uint8 arrays, got {array.dtype}")
    header = bytes([0, 0, UBYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + np.ascontiguousarray(array).tobytes()
    if path.suffix == ".gz":
        payload = gzip.compress(payload, compresslevel=9, mtime=0)
    path.write_bytes(payload)


def read_idx_pair(
    images_path: Path, labels_path: Path, classes: tuple[str, ...] = ()
) -> ImageDataset:
    """Images (N, rows, cols) and labels (N,) IDX files as a 1-channel :class:`ImageDataset`.

    The labels are named by ``classes`` if it has a name for each, else "0", "1", ... up to the
    largest label.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise UserError(
            f"{images_path}: expected unsigned-byte images with 3 dimensions (magic 00000803), "
            f"found {images.dtype} with {images.ndim}; is this a labels file?"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise UserError(
            f"{labels_path}: expected unsigned-byte labels with 1 dimension (magic 00000801), "
            f"found {labels.dtype} with {labels.ndim}; is this an images file?"
        )
    if len(images) != len(labels):
        raise UserError(
            f"{labels_path}: {len(labels)} labels for the {len(images)} images of "
            f"{images_path.name}; the two files come from different sets"
        )
    if images.shape[1] != images.shape[2]:
        rows, cols = images.shape[1:]
        raise UserError(f"{images_path}: images of {rows}x{cols} px; only square images are read")
    count = int(labels.max()) + 1 if len(labels) else 0
    if count > len(classes):
        classes = tuple(str(k) for k in range(count))
    return ImageDataset(
        torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels).long(), classes
    )


def _split_file(directory: Path, split: str, kind: str) -> Path | None:
    """The one ``kind`` ("images" or "labels") file of ``split`` in ``directory``; None if absent.

    When both a raw and a gzipped copy exist (torchvision keeps both), the raw one is read.
    """
    rank = 3 if kind == "images" else 1
    stems = "|".join(SPLIT_STEMS[split])
    pattern = re.compile(rf"(?:.*[-_])?(?:{stems})-{kind}[-.]idx{rank}-ubyte(?:\.gz)?")
    found = sorted(p for p in directory.iterdir() if p.is_file() and pattern.fullmatch(p.name))
    distinct = {p.name.removesuffix(".gz"): p for p in reversed(found)}  # raw wins over .gz
    if len(distinct) > 1:
        raise UserError(
            f"{directory} has several {split} {kind} files ({', '.join(sorted(distinct))}); "
            "keep one data set per folder"
        )
    return next(iter(distinct.values()), None)


def idx_directory(path: Path) -> Path | None:
    """The folder holding IDX files: ``path`` itself or its ``raw/`` (torchvision's layout)."""
    for directory in (path, path / "raw"):
        if directory.is_dir() and any(_split_file(directory, s, "images") for s in SPLIT_STEMS):
            return directory
    return None


def idx_splits(path: Path) -> tuple[str, ...]:
    """The splits whose images file the IDX folder at ``path`` holds."""
    directory = idx_directory(path)
    if directory is None:
        return ()
    return tuple(s for s in SPLIT_STEMS if _split_file(directory, s, "images"))


def _classes_for(path: Path) -> tuple[str, ...]:
    """Class names guessed from the folder's path (Fashion-MNIST, KMNIST); digits otherwise."""
    where = str(path.resolve()).lower()
    if "fashion" in where:
        return FASHION_MNIST_CLASSES
    if "kmnist" in where:
        return KMNIST_CLASSES
    return ()


def read_idx_dir(path: Path, split: str) -> ImageDataset:
    """The ``split`` ("train" or "test" = t10k) of an MNIST-style folder of IDX files."""
    directory = idx_directory(path)
    if directory is None:
        raise UserError(
            f"{path} holds no MNIST-style IDX files (train-images-idx3-ubyte.gz); check the path"
        )
    check_split(split, tuple(SPLIT_STEMS), directory)
    images = _split_file(directory, split, "images")
    labels = _split_file(directory, split, "labels")
    if images is None or labels is None:
        missing = "images-idx3-ubyte" if images is None else "labels-idx1-ubyte"
        raise UserError(
            f"{directory} has no {split} {missing} file ({SPLIT_STEMS[split][0]}-{missing}[.gz]); "
            "the data set is incomplete"
        )
    return read_idx_pair(images, labels, _classes_for(directory))
