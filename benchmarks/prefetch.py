"""The loader's wait per step with the background gather against a gather on the main thread.

    PYTHONPATH=src python benchmarks/prefetch.py [--steps 40]

Batches of 256 images at 96 px (STL-10's size, 7 MB a batch) from memory and from a transposed
memory map (STL-10's layout), consumed by a stand-in for a training step (a one-thread matmul
taking about one ``index_select`` gather). ``wait_ms``: mean time per step the consumer spends getting its
batch; ``epoch_s``: the whole loop. The plain rows gather in the consumer's thread by advanced
indexing, as the loader did before; the inline rows by ``index_select`` (the CPU default); the
prefetch rows on the background thread (CUDA's default, ``prefetch=True`` elsewhere).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from simclrv2.data import ImageDataset, epoch_batches, epoch_order
from simclrv2.tables import format_table

BATCH, SIDE = 256, 96


def plain(data: ImageDataset, steps: int):
    """The previous loader: advanced indexing in the consumer's thread."""
    order = epoch_order(len(data), seed=0, epoch=0)
    for step in range(steps):
        index = order[step * BATCH : (step + 1) * BATCH]
        yield data.images[index].contiguous(), data.labels[index]


def timed(batches, work: torch.Tensor) -> tuple[float, float]:
    """(mean ms waiting for a batch, seconds for the loop) with ``work @ work`` as the step."""
    waited, start = 0.0, time.perf_counter()
    iterator = iter(batches)
    while True:
        asked = time.perf_counter()
        try:
            images, _ = next(iterator)
        except StopIteration:
            break
        waited += time.perf_counter() - asked
        work @ work + images[0, 0, 0, 0]  # the step: about one gather's time
    return waited, time.perf_counter() - start


def step_like(ms: float) -> torch.Tensor:
    """A square matrix whose product with itself takes about ``ms`` milliseconds here."""
    probe = torch.randn(512, 512)
    start = time.perf_counter()
    for _ in range(5):
        probe @ probe
    per_product = (time.perf_counter() - start) / 5 * 1000
    side = round(512 * (ms / per_product) ** (1 / 3))
    return torch.randn(side, side)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    torch.set_num_threads(1)
    n = args.steps * BATCH
    values = np.random.default_rng(0).integers(0, 256, (n, 3, SIDE, SIDE), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "images.bin"
        values.transpose(0, 1, 3, 2).tofile(path)  # column-major planes, as STL-10 stores them
        mapped = np.memmap(path, np.uint8, mode="c", shape=values.shape)
        sources = {
            "memory": ImageDataset(torch.from_numpy(values)),
            "transposed memory map": ImageDataset(torch.from_numpy(mapped).transpose(2, 3)),
        }
        for name, data in sources.items():
            start = time.perf_counter()
            list(plain(data, args.steps))
            plain_ms = 1000 * (time.perf_counter() - start) / args.steps
            start = time.perf_counter()
            order = epoch_order(len(data), seed=0, epoch=0)
            for index in order[: args.steps * BATCH].view(args.steps, BATCH):
                torch.index_select(data.images, 0, index)
            select_ms = 1000 * (time.perf_counter() - start) / args.steps
            work = step_like(select_ms)
            for loader, batches, gather_ms in (
                ("plain (indexing, same thread)", plain(data, args.steps), plain_ms),
                (
                    "inline (index_select, same thread: the CPU default)",
                    epoch_batches(data, BATCH, seed=0, epoch=0, prefetch=False),
                    select_ms,
                ),
                (
                    "prefetch (index_select, ahead: CUDA's)",
                    epoch_batches(data, BATCH, seed=0, epoch=0, prefetch=True),
                    select_ms,
                ),
            ):
                waited, seconds = timed(batches, work)
                rows.append(
                    {
                        "source": name,
                        "loader": loader,
                        "gather_ms": gather_ms,
                        "wait_ms": 1000 * waited / args.steps,
                        "epoch_s": seconds,
                    }
                )
    print(format_table(rows, markdown=True))


if __name__ == "__main__":
    main()
