"""Epochs of batches by tensor indexing, in an order that is a pure function of (seed, epoch).

There is no sampler state: the permutation of epoch ``e`` is drawn from a generator seeded with
(seed, e), so a run resumed at step ``start_batch`` of an epoch sees exactly the batches it would
have seen, and every process draws the same permutation without communicating. ``batch_size`` is
the GLOBAL batch (the one the loss sees after the all-gather); process ``rank`` gets the
``rank``-th contiguous slice of each global batch, so concatenating the slices in rank order
rebuilds the single-process batch exactly (DistributedSampler's guarantees: disjoint shards, equal
sizes, a reshuffle each epoch).

On CUDA a background thread gathers each batch one ahead of the consumer (``torch.index_select``,
which runs without the GIL) into one of two reusable pinned buffers and copies that to the GPU on
a side stream; the compute stream waits for the copy on the device, never on the host. On the CPU
the gather is inline by default (``prefetch``): there the thread competes with the step's own
threads for the cores (benchmarks/RESULTS.md, "Prefetching"); every batch is a fresh tensor the
consumer owns.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from simclrv2.data.dataset import ImageDataset
from simclrv2.errors import UserError


class Batch(NamedTuple):
    """One process's share of a global batch: uint8 images (B, C, S, S), int64 labels (B,) and
    each image's (height, width) on its square, int64 (B, 2) (the whole square for arrays)."""

    images: Tensor
    labels: Tensor
    extents: Tensor


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
    prefetch: bool | None = None,
) -> Iterator[Batch]:
    """This process's :class:`Batch` es of one epoch, from batch ``start_batch`` on, with
    B = batch_size / world_size; gathered one ahead on a thread with ``prefetch`` (default: on
    CUDA only; always there).

    With ``drop_last=False`` the last global batch is short; it is padded up to a multiple of
    ``world_size`` with images from the start of the epoch's order, as DistributedSampler does.
    Batches are gathered one ahead on a background thread (module docstring); close the
    generator (``contextlib.closing``) when leaving it early, to stop that thread at once.
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
    device = torch.device(device)
    prefetch = device.type == "cuda" or bool(prefetch)
    steps_left = range(start_batch, steps)
    return _batches(dataset, order, batch_size, steps_left, rank, world_size, device, prefetch)


def _batches(
    dataset: ImageDataset,
    order: Tensor,
    batch_size: int,
    steps: range,
    rank: int,
    world_size: int,
    device: torch.device,
    prefetch: bool,
) -> Iterator[Batch]:
    """The generator behind :func:`epoch_batches`, which checks its arguments before the first
    batch is asked for."""
    shards = (_shard(order, step, batch_size, rank, world_size) for step in steps)
    if not prefetch:
        yield from (_gather(dataset, index) for index in shards)
        return
    if device.type == "cuda":
        copy = _PinnedCopy(dataset, batch_size // world_size, device)  # CUDA only
        prefetched = _Prefetch(map(copy, shards))
        batches = map(_arrive_on_cuda, prefetched)
    else:
        prefetched = _Prefetch(_gather(dataset, index) for index in shards)
        batches = iter(prefetched)
    try:
        yield from batches
    finally:  # exhausted, or closed early (a break, an exception in the consumer)
        prefetched.close()


def _shard(order: Tensor, step: int, batch_size: int, rank: int, world_size: int) -> Tensor:
    """The indices of process ``rank``'s slice of global batch ``step`` (the last may be short)."""
    batch = order[step * batch_size : (step + 1) * batch_size]
    share = len(batch) // world_size
    return batch[rank * share : (rank + 1) * share]


def _gather(dataset: ImageDataset, index: Tensor) -> Batch:
    """The batch at ``index``: new contiguous tensors (also from a memory map or a
    non-contiguous view)."""
    return Batch(*dataset.rows(index))


class _PinnedCopy:
    """CUDA only. Gathers a batch into one of two reusable pinned buffers and starts its copy to
    ``device`` on a side stream; returns the device tensors and the event that marks the copy done.

    A buffer is written again two batches later, after its copy's event has completed (a host wait
    on the background thread, not on the compute stream).
    """

    def __init__(self, dataset: ImageDataset, rows: int, device: torch.device) -> None:
        self.dataset, self.device = dataset, device
        self.stream = torch.cuda.Stream(device)
        self.buffers = [
            (
                torch.empty((rows, *dataset.images.shape[1:]), dtype=torch.uint8, pin_memory=True),
                torch.empty(rows, dtype=torch.int64, pin_memory=True),
                torch.empty((rows, 2), dtype=torch.int64, pin_memory=True),
            )
            for _ in range(2)
        ]
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.calls = 0

    def __call__(self, index: Tensor) -> tuple[Batch, torch.cuda.Event]:
        slot = self.calls % 2
        self.calls += 1
        if self.copied[slot] is not None:
            self.copied[slot].synchronize()  # the buffer's previous batch has left for the GPU
        images, labels, extents = (buffer[: len(index)] for buffer in self.buffers[slot])
        torch.index_select(self.dataset.images, 0, index, out=images)
        torch.index_select(self.dataset.labels, 0, index, out=labels)
        torch.index_select(self.dataset.image_extents(), 0, index, out=extents)
        with torch.cuda.device(self.device), torch.cuda.stream(self.stream):
            images = images.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            extents = extents.to(self.device, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self.stream)
        self.copied[slot] = done
        return Batch(images, labels, extents), done


def _arrive_on_cuda(item: tuple[Batch, torch.cuda.Event]) -> Batch:
    """CUDA only. The batch, for the compute stream: it waits (on the device) for the copy, and
    the allocator keeps the batch's memory until the compute stream is done with it (the memory
    was allocated on the side stream)."""
    batch, done = item
    compute = torch.cuda.current_stream(batch.images.device)
    compute.wait_event(done)
    for tensor in batch:
        tensor.record_stream(compute)
    return batch


_END = object()  # the producer's last item


class _Prefetch:
    """Iterates ``items`` on a background thread, one item ahead of the consumer; an exception
    raised there is raised here. :meth:`close` stops and joins the thread."""

    def __init__(self, items: Iterable[object]) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._produce, args=(items,), name="simclrv2-prefetch", daemon=True
        )
        self._thread.start()

    def _produce(self, items: Iterable[object]) -> None:
        try:
            for item in items:
                self._queue.put((item, None))
                if self._stop.is_set():
                    return
            self._queue.put((_END, None))
        except BaseException as error:  # handed to the consumer
            self._queue.put((None, error))

    def __iter__(self) -> Iterator[object]:
        while True:
            item, error = self._queue.get()
            if error is not None:
                raise error
            if item is _END:
                return
            yield item

    def close(self) -> None:
        """Stop the producer and wait for it. After the flag is set and the queue emptied, the
        producer makes at most one more put, which finds room, then sees the flag."""
        self._stop.set()
        with contextlib.suppress(queue.Empty):
            self._queue.get_nowait()
        self._thread.join()
