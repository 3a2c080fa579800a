"""STL-10 binaries: 96x96 RGB images, 5,000 train, 8,000 test and 100,000 unlabelled, 10 classes.

``stl10_binary/`` holds ``{train,test,unlabeled}_X.bin`` (uint8; per image its R, G and B planes,
each plane COLUMN-major, so the file is an (N, 3, W, H) array), ``{train,test}_y.bin`` (one uint8
label per image, 1..10) and ``class_names.txt``. The images are memory-mapped copy-on-write and
viewed as (N, 3, H, W) by swapping the last two axes, so even the 2.7 GB unlabeled split opens at
once; batches gather from the map.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from simclrv2.data.dataset import ImageDataset, check_split
from simclrv2.errors import UserError

FOLDER = "stl10_binary"
SIDE = 96
SPLITS = ("train", "test", "unlabeled")
LABELLED = ("train", "test")


def stl10_directory(path: Path) -> Path | None:
    """The folder holding the ``*_X.bin`` files: ``path/stl10_binary`` or ``path`` itself."""
    for directory in (path / FOLDER, path):
        if directory.is_dir() and any((directory / f"{s}_X.bin").is_file() for s in SPLITS):
            return directory
    return None


def stl10_splits(path: Path) -> tuple[str, ...]:
    """The splits whose ``*_X.bin`` the STL-10 folder at ``path`` holds."""
    directory = stl10_directory(path)
    return tuple(s for s in SPLITS if directory and (directory / f"{s}_X.bin").is_file())


def _file(directory: Path, name: str) -> Path:
    path = directory / name
    if not path.is_file():
        raise UserError(f"{path} is missing; the {FOLDER} folder is incomplete")
    return path


def read_stl10(path: Path, split: str) -> ImageDataset:
    """The ``split`` ("train", "test" or "unlabeled") of STL-10; unlabeled images get label -1."""
    directory = stl10_directory(path)
    if directory is None:
        raise UserError(
            f"{path} holds no STL-10 binaries ({FOLDER}/train_X.bin, ...); check the path"
        )
    check_split(split, SPLITS, directory)
    names = _file(directory, "class_names.txt").read_text().splitlines()
    classes = [name.strip() for name in names if name.strip()]
    images_path = _file(directory, f"{split}_X.bin")
    per_image = 3 * SIDE * SIDE
    size = images_path.stat().st_size
    if size == 0 or size % per_image:
        raise UserError(
            f"{images_path}: {size} bytes is not a whole number of {SIDE}x{SIDE} RGB images "
            f"({per_image} bytes each); the file is truncated"
        )
    planes = np.memmap(images_path, np.uint8, mode="c", shape=(size // per_image, 3, SIDE, SIDE))
    images = torch.from_numpy(planes).transpose(2, 3)  # column-major planes -> (N, 3, H, W)
    if split not in LABELLED:
        return ImageDataset(images, classes=classes)
    labels_path = _file(directory, f"{split}_y.bin")
    labels = np.fromfile(labels_path, np.uint8).astype(np.int64)
    if len(labels) != len(images):
        raise UserError(
            f"{labels_path}: {len(labels)} labels for the {len(images)} images of "
            f"{images_path.name}"
        )
    if len(labels) and not 1 <= labels.min() <= labels.max() <= len(classes):
        raise UserError(f"{labels_path}: labels outside 1..{len(classes)}; the file is damaged")
    return ImageDataset(images, torch.from_numpy(labels - 1), classes)
