"""Data layer timings: loading, an epoch of batches against a per-image DataLoader, decoding.

    python benchmarks/data_loading.py [--shared ../shared]

Prints a Markdown table (seconds and images per second, best of 3); the real-data rows need the
Fashion-MNIST and ImageNet-sample folders of ../shared/data (the machine's other load shows).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from simclrv2.data import epoch_batches, load_dataset
from simclrv2.tables import format_table

BATCH = 256
COPIES = 10  # the 20 sample JPEGs, linked this many times


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(what: str, seconds: float, images: int) -> dict:
    return {"what": what, "seconds": seconds, "images/s": images / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).parents[2] / "shared")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = [row("load embedded train", best_of(lambda: load_dataset(None)), 10_000)]
    fashion = args.shared / "data" / "fashion-mnist"
    data = load_dataset(None)
    if fashion.is_dir():
        rows.append(
            row(
                "load Fashion-MNIST train (IDX .gz)",
                best_of(lambda: load_dataset(str(fashion))),
                60_000,
            )
        )
        data = load_dataset(str(fashion))
    n = len(data) // BATCH * BATCH
    rows.append(
        row(
            f"epoch_batches, {len(data)} images, batch {BATCH}",
            best_of(lambda: list(epoch_batches(data, BATCH, seed=0, epoch=0))),
            n,
        )
    )
    loader = DataLoader(data, BATCH, shuffle=True, drop_last=True)
    rows.append(
        row("torch DataLoader (per-image __getitem__)", best_of(lambda: list(loader), 1), n)
    )
    sample = args.shared / "data" / "imagenet-sample"
    if sample.is_dir():
        with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as cache:
            for copy in range(COPIES):  # enough images for several chunks of work
                for jpeg in sample.iterdir():
                    (Path(folder) / f"{copy}_{jpeg.name}").symlink_to(jpeg)
            images = COPIES * len(list(sample.iterdir()))
            for workers in (1, 2):
                seconds = best_of(
                    lambda w=workers: load_dataset(folder, image_size=224, workers=w), 1
                )
                rows.append(
                    row(f"decode {images} JPEGs to 224 px, workers={workers}", seconds, images)
                )
            load_dataset(folder, image_size=224, cache_dir=cache)
            seconds = best_of(lambda: load_dataset(folder, image_size=224, cache_dir=cache))
            rows.append(row("the same from the .npy cache (memory-mapped)", seconds, images))
    print(format_table(rows, markdown=True))


if __name__ == "__main__":
    main()
