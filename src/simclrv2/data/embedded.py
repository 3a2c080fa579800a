"""The embedded default data set: a class-balanced subset of Fashion-MNIST inside the package.

1,000 train and 200 test images per class (10,000 + 2,000 greyscale 28x28 images, 10 classes),
drawn with seed 0 by :func:`~simclrv2.data.splits.class_balanced_indices` from the full
Fashion-MNIST (Zalando SE, MIT/Expat licence, see ``assets/fashion-mnist-LICENSE.txt``), kept in
their original order and stored as gzipped IDX files in ``simclrv2/assets/``. It is what every
command uses when given no data, so the package runs end to end with nothing downloaded.
Regenerate it from the full set with::

    python scripts/make_embedded_data.py /usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

from importlib.resources import as_file, files
from pathlib import Path

import torch

from simclrv2.data.dataset import ImageDataset, check_split
from simclrv2.data.idx import FASHION_MNIST_CLASSES, read_idx_dir, read_idx_pair, write_idx
from simclrv2.data.splits import class_balanced_indices

PER_CLASS = {"train": 1000, "test": 200}  # images per class in each split
SEED = 0
FILE_STEMS = {"train": "train", "test": "t10k"}


def asset_name(split: str, kind: str) -> str:
    """File name of the embedded ``kind`` ("images" or "labels") file of ``split``."""
    rank = 3 if kind == "images" else 1
    return f"fashion-mnist-subset-{FILE_STEMS[split]}-{kind}-idx{rank}-ubyte.gz"


def load_embedded(split: str = "train") -> ImageDataset:
    """The embedded Fashion-MNIST subset: split "train" (10,000 images) or "test" (2,000)."""
    check_split(split, tuple(PER_CLASS), "the embedded Fashion-MNIST subset")
    assets = files("simclrv2") / "assets"
    with (
        as_file(assets / asset_name(split, "images")) as images,
        as_file(assets / asset_name(split, "labels")) as labels,
    ):
        return read_idx_pair(images, labels, FASHION_MNIST_CLASSES)


def build_embedded(source: Path, out_dir: Path) -> None:
    """Write the embedded subset's IDX files into ``out_dir``, drawn from the full Fashion-MNIST
    folder ``source``. Deterministic: the same source gives the same bytes."""
    for split, per_class in PER_CLASS.items():
        full = read_idx_dir(source, split)
        subset = full.subset(class_balanced_indices(full.labels, per_class=per_class, seed=SEED))
        write_idx(out_dir / asset_name(split, "images"), subset.images[:, 0].numpy())
        write_idx(out_dir / asset_name(split, "labels"), subset.labels.to(torch.uint8).numpy())
