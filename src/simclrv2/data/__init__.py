"""Data: every source as one uint8 (N, C, H, W) tensor with int64 labels, label fractions, batches.

``load_dataset(source, split)`` reads the embedded Fashion-MNIST subset or a path; ``splits`` picks
the labelled fraction; ``epoch_batches`` yields resumable, shardable batches by tensor indexing.
"""

from simclrv2.data.dataset import UNLABELLED, ImageDataset
from simclrv2.data.loader import Batch, batches_per_epoch, epoch_batches, epoch_order
from simclrv2.data.sources import load_dataset
from simclrv2.data.splits import (
    class_balanced_indices,
    indices_from_file,
    indices_from_names,
    labelled_indices,
    load_indices,
    save_indices,
    save_names,
)

__all__ = [
    "UNLABELLED",
    "Batch",
    "ImageDataset",
    "batches_per_epoch",
    "class_balanced_indices",
    "epoch_batches",
    "epoch_order",
    "indices_from_file",
    "indices_from_names",
    "labelled_indices",
    "load_dataset",
    "load_indices",
    "save_indices",
    "save_names",
]
