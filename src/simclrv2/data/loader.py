"""Epochs of batches by tensor indexing, in an order that is a pure function of (seed, epoch).

There is no sampler state: the permutation of epoch ``e`` is drawn from a generator seeded with
(seed, e), so a run resumed at step ``start_batch`` of an epoch sees exactly the batches it would
have seen, and every process draws the same permutation without communicating. ``batch_size`` is
the GLOBAL batch (the one the loss sees after the all-gather); process ``rank`` gets the
``rank``-th contiguous slice of each global batch, so concatenating the slices in rank order
rebuilds the single-process batch exactly (DistributedSampler's guarantees: disjoint shards, equal
sizes, a reshuffle each epoch).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from simclrv2.data.dataset import ImageDataset
from simclrv2.errors import UserError


def batches_per_epoch(n: int, batch_size: int, drop_last: bool = True, world_size: int = 1) -> int:
    """Global batches (= steps on every process) in one epoch over ``n`` images."""
    if batch_size < 1 or batch_size % world_size:
        raise UserError(
            f"batch size {batch_size} must be a positive multiple of the {world_size} processes"
        )
    steps = n // batch_size if drop_last else -(-n // batch_size)
    if steps == 0:
        raise UserError(
            f"the data has {n} images, fewer than one batch of {batch_size}; lower the batch size"
        )
    return steps


def epoch_order(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The order of the ``n`` images in epoch ``epoch``: a permutation fixed by (seed, epoch)."""
    if not shuffle:
        return torch.arange(n)
    key = np.random.SeedSequence([seed, epoch]).generate_state(1, np.uint64)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(key)))


def epoch_batches(
    dataset: ImageDataset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    start_batch: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    rank: int = 0,
    world_size: int = 1,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[Tensor, Tensor]]:
    """This process's (uint8 images (B, C, H, W), int64 labels (B,)) batches of one epoch, from
    batch ``start_batch`` on, with B = batch_size / world_size.

    With ``drop_last=False`` the last global batch is short; it is padded up to a multiple of
    ``world_size`` with images from the start of the epoch's order, as DistributedSampler does.
    On CUDA the batch is copied from pinned memory without blocking.
    """
    steps = batches_per_epoch(len(dataset), batch_size, drop_last, world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in [0, {world_size})")
    if not 0 <= start_batch <= steps:
        raise ValueError(f"start_batch {start_batch} is not in [0, {steps}]")
    order = epoch_order(len(dataset), seed=seed, epoch=epoch, shuffle=shuffle)
    if not drop_last:  # pad the short last batch to a multiple of world_size
        padded = -(-len(order) // world_size) * world_size
        order = order[torch.arange(padded) % len(order)]
    return _batches(dataset, order, batch_size, range(start_batch, steps), rank, world_size, device)


def _batches(
    dataset: ImageDataset,
    order: Tensor,
    batch_size: int,
    steps: range,
    rank: int,
    world_size: int,
    device: str | torch.device,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The generator behind :func:`epoch_batches`, which checks its arguments before the first
    batch is asked for."""
    device = torch.device(device)
    pin = device.type == "cuda"
    for step in steps:
        batch = order[step * batch_size : (step + 1) * batch_size]  # the global batch
        share = len(batch) // world_size
        index = batch[rank * share : (rank + 1) * share]
        images, labels = dataset.images[index].contiguous(), dataset.labels[index]  # (B, C, H, W)
        if pin:
            images, labels = images.pin_memory(), labels.pin_memory()
        yield images.to(device, non_blocking=pin), labels.to(device, non_blocking=pin)
