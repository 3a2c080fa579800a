"""Data layer timings: loading, an epoch of batches against a per-image DataLoader, and an image
folder's store (decode rate, bytes per image, a step's gather and views at 224 px).

    python benchmarks/data_loading.py [--shared ../shared] [--store-only]
    PYTHONPATH=OTHER_CHECKOUT/src python benchmarks/data_loading.py --store-only  # before/after

Prints Markdown tables (seconds and images per second, best of 3); the real-data rows need the
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
COPIES = 13  # the 20 sample JPEGs, linked this many times: more than a batch


def best_of(fn: Callable[[], object], repeats: int = 3) -> float:
    """Fastest wall time of ``repeats`` calls, in seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def row(what: str, seconds: float, images: int) -> dict:
    return {"what": what, "seconds": seconds, "images/s": images / seconds, "bytes": None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).parents[2] / "shared")
    parser.add_argument("--store-only", action="store_true", help="only the image folder store")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sample = args.shared / "data" / "imagenet-sample"
    if args.store_only:
        print(format_table(folder_store(sample), markdown=True))
        return
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
    print(format_table(rows, markdown=True))
    if sample.is_dir():
        print(f"\nImage folder store, 224 px views, {sample} x {COPIES}\n")
        print(format_table(folder_store(sample), markdown=True))


def folder_store(sample: Path) -> list[dict]:
    """What an image folder costs to decode, store and read per step: decode rate, stored bytes
    per image (in memory and in the ``.npy`` cache), a step's gather from the memory-mapped cache
    and its two augmented views at 224 px. Runs on the code before whole images too (no
    ``extents`` there), for the before/after table."""
    from simclrv2.augment import SimCLRAugment

    rows = []
    with tempfile.TemporaryDirectory() as folder, tempfile.TemporaryDirectory() as cache:
        for copy in range(COPIES):  # enough images for several chunks of work and one batch
            for jpeg in sample.iterdir():
                (Path(folder) / f"{copy}_{jpeg.name}").symlink_to(jpeg)
        images = COPIES * len(list(sample.iterdir()))
        for workers in (1, 2):
            seconds = best_of(lambda w=workers: load_dataset(folder, image_size=224, workers=w), 1)
            rows.append(
                row(f"decode {images} JPEGs for 224 px, workers={workers}", seconds, images)
            )
        data = load_dataset(folder, image_size=224, cache_dir=cache)
        npy = next(Path(cache).glob("*.npy"))
        stored = data.images.shape[-1]
        per_image = data.images[0].numel()
        rows.append({"what": f"stored square: {stored} px, bytes per image", "bytes": per_image})
        rows.append(
            {"what": "  .npy cache, bytes per image", "bytes": npy.stat().st_size // images}
        )
        seconds = best_of(lambda: load_dataset(folder, image_size=224, cache_dir=cache))
        rows.append(row("reopen from the .npy cache (memory-mapped)", seconds, images))
        generator = torch.Generator().manual_seed(0)
        index = torch.randperm(images, generator=generator)[:BATCH]
        extents = getattr(data, "extents", None)
        seconds = best_of(lambda: torch.index_select(data.images, 0, index), 5)
        rows.append(
            row(f"gather a batch of {BATCH} from the cache (a step's read)", seconds, BATCH)
        )
        batch = torch.index_select(data.images, 0, index)[:64]
        sizes = None if extents is None else extents[index[:64]]
        augment = SimCLRAugment(size=224)
        views = (
            (lambda: augment(batch, generator))
            if sizes is None
            else (lambda: augment(batch, generator, sizes))
        )
        rows.append(row("one SimCLR view of 64 images at 224 px", best_of(views, 3), 64))
    return rows


if __name__ == "__main__":
    main()
