"""Image folders: class sub-folders give the labels, a flat folder is unlabelled.

Layouts: ``root/<class>/**/<image>`` (classes in sorted order are labels 0, 1, ...) or
``root/<image>`` (labels -1), optionally split as ``root/train``, ``root/test`` (or ``root/val``,
ImageNet's) and ``root/unlabeled``; a folder without split sub-folders is the "train" split.

The images are decoded ONCE, in worker processes, into one uint8 array of the folder's channels
(:mod:`simclrv2.data.decode`: grey, RGB or C bands; deep images scaled). Each image is kept
WHOLE, its aspect kept, resized (bicubic, antialiased, never enlarged) so that its longer side is
at most the stored side, and placed in the top-left corner of a square of that side, its extent
recorded; random crops are then cut from the whole image in its own coordinates, and evaluation
takes the centre of the original's shorter side. The stored side is ``stored_side``, by default
``ceil(size * 8/7 * 4/3)`` (342 px for 224 px views): a 4:3 photograph keeps a shorter side of
``size / 0.875``, so evaluation's centre 87.5% is ``size`` px, and random crops mostly shrink
(README, "What is stored"); the square is no larger than the folder's largest image. Training
then sees uint8 batches as for every other source and never decodes during an epoch. With a
``cache_dir`` the array is written there as a ``.npy`` (plus a ``.json`` of labels, names and
extents), keyed by the folder's file names, sizes, modification times and labels, by the stored
side and the depth rule, so a folder that changes gets a new entry; later runs memory-map it
instead of decoding, and processes that start together (the ranks of a torchrun node) wait on a
lock while one of them builds it. An image that cannot be
decoded is skipped and counted in one warning, or stops the load with a one-line error under
``strict``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from simclrv2.atomic import atomic_file, write_text
from simclrv2.data.dataset import UNLABELLED, ImageDataset, check_split
from simclrv2.data.decode import DepthScaling, decode_image, folder_shape
from simclrv2.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
# split -> the sub-folder names that hold it, in order of preference
SPLIT_FOLDERS = {
    "train": ("train",),
    "test": ("test", "val"),
    "unlabeled": ("unlabeled", "unlabelled"),
}
DEFAULT_MAX_SIZE = 224  # default side: the first image's shorter side, at most this (ImageNet's)
CHUNK = 64  # images per task sent to a worker process (smaller folders: no processes)
CACHE_VERSION = 3  # part of the cache key: bump when the decoding changes


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _images_under(directory: Path, recursive: bool) -> list[Path]:
    found = directory.rglob("*") if recursive else directory.iterdir()
    return sorted(
        p for p in found if p.suffix.lower() in IMAGE_SUFFIXES and _visible(p) and p.is_file()
    )


def folder_splits(path: Path) -> dict[str, Path]:
    """The splits an image folder holds: split name -> its sub-folder, or ``{"train": path}``
    when it has no split sub-folders."""
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; an image folder holds images or class folders")
    present = {
        name: next(path / f for f in folders if (path / f).is_dir())
        for name, folders in SPLIT_FOLDERS.items()
        if any((path / f).is_dir() for f in folders)
    }
    return present or {"train": path}


def split_root(path: Path, split: str) -> Path:
    """The folder that holds ``split``: ``path/<split folder>``, or ``path`` itself for "train"
    when it has no split sub-folders."""
    present = folder_splits(path)
    check_split(split, tuple(present), path)
    return present[split]


def list_images(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, classes) of a class-per-sub-folder or flat folder of images."""
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and _visible(p))
    if classes:
        per_class = [_images_under(root / name, recursive=True) for name in classes]
        empty = [name for name, group in zip(classes, per_class) if not group]
        if empty:
            raise UserError(
                f"{root / empty[0]}: the class folder holds no images ({len(empty)} of "
                f"{len(classes)} class folders are empty); add images or remove the folder"
            )
        files = [f for group in per_class for f in group]
        labels = [k for k, group in enumerate(per_class) for _ in group]
    else:
        files = _images_under(root, recursive=False)
        labels = [UNLABELLED] * len(files)
    if not files:
        raise UserError(
            f"{root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); check the data path"
        )
    return files, labels, classes


def stored_side(view_size: int) -> int:
    """The default stored side for views of ``view_size`` px (module docstring): 4/3 of the
    shorter side whose centre 87.5% is the view."""
    return math.ceil(view_size * 8 / 7 * 4 / 3)


def _store_shape(files: list[Path], limit: int, size: int) -> tuple[int, int, int, int]:
    """(N, C, S, S) of the stored array: the folder's channels, and squares of the stored side
    ``limit``, or of the largest image when all are smaller (``size`` when none is readable)."""
    channels, longest = folder_shape(files)
    side = min(limit, longest or size)
    return len(files), channels, side, side


Decoded = tuple[list[np.ndarray], list[tuple[int, str]]]  # images (C, h, w), (position, problem)


def _decode_chunk(paths: list[str], side: int, channels: int, depth: DepthScaling) -> Decoded:
    """Decode a chunk in a worker: (the decoded whole images, (position, problem) of each
    failure)."""
    decoded, failures = [], []
    for position, path in enumerate(paths):
        try:
            decoded.append(decode_image(path, side, channels, depth))
        except Exception as error:  # Pillow raises many types for damaged files; all mean "skip"
            failures.append((position, f"{type(error).__name__}: {error}"))
    return decoded, failures


def _undecodable(path: Path | str, problem: str) -> UserError:
    return UserError(
        f"{path}: cannot decode this image ({problem}); "
        "remove or replace it, or load without strict to skip it"
    )


def _decode_all(
    files: list[Path], out: np.ndarray, depth: DepthScaling, workers: int, strict: bool
) -> tuple[list[tuple[int, int]], list[tuple[int, str]]]:
    """Decode ``files`` into the first rows of ``out`` (N, C, S, S) (zeros), each whole image in
    its row's top-left corner, in order, skipping failures (raising on the first under
    ``strict``); returns the (height, width) of each decoded image and (file index, problem) of
    each skipped file."""
    chunks = [[str(f) for f in files[i : i + CHUNK]] for i in range(0, len(files), CHUNK)]
    shape = [[out.shape[-1]] * len(chunks), [out.shape[1]] * len(chunks), [depth] * len(chunks)]
    pool = ProcessPoolExecutor(workers) if workers > 1 and len(chunks) > 1 else None
    results = (pool.map if pool else map)(_decode_chunk, chunks, *shape)
    extents, skipped = [], []
    try:
        for start, (images, failures) in zip(range(0, len(files), CHUNK), results):
            if strict and failures:
                position, problem = failures[0]
                raise _undecodable(files[start + position], problem)
            skipped += [(start + position, problem) for position, problem in failures]
            for image in images:
                _, height, width = image.shape
                out[len(extents), :, :height, :width] = image
                extents.append((height, width))
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    return extents, skipped


def _default_size(root: Path, files: list[Path]) -> int:
    """The shorter side of the first readable image, at most DEFAULT_MAX_SIZE."""
    for path in files:
        try:
            with Image.open(path) as image:
                return min(DEFAULT_MAX_SIZE, *image.size)
        except Exception:  # unreadable: the decoding pass reports it
            continue
    raise UserError(
        f"{root}: none of the {len(files)} images can be read; check that these are image files"
    )


def _cache_stem(
    root: Path, files: list[Path], labels: list[int], size: int, depth: DepthScaling
) -> str:
    """``<folder>-<size>px-<key>``; the key hashes ``size``, the depth rule and every file's
    name, bytes, mtime and label."""
    digest = hashlib.sha256(f"{CACHE_VERSION} {root.resolve()} {size} {depth}".encode())
    for path, label in zip(files, labels):
        stat = path.stat()
        name = os.path.relpath(path, root)
        digest.update(f"\n{name} {stat.st_size} {stat.st_mtime_ns} {label}".encode())
    return f"{root.name}-{size}px-{digest.hexdigest()[:16]}"


def _listing(labels, classes, names, extents, skipped) -> dict:
    """What a decoded folder holds beside the pixels: labels, names and (height, width) of the
    kept images, the classes, and (name, problem) of each skipped image."""
    gone = {i for i, _ in skipped}
    return {
        "labels": [label for i, label in enumerate(labels) if i not in gone],
        "classes": classes,
        "names": [name for i, name in enumerate(names) if i not in gone],
        "extents": [list(extent) for extent in extents],
        "skipped": [[names[i], problem] for i, problem in skipped],
    }


def _decode_to_cache(
    npy: Path,
    files: list[Path],
    shape: tuple[int, int, int, int],
    depth: DepthScaling,
    workers: int,
    strict: bool,
):
    """Decode into ``npy`` of ``shape`` through a memory map, written atomically; returns the
    extents and the skipped files. The decoded rows come first; the rows of skipped files stay
    zero at the end, unread."""
    npy.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(npy) as staging:
        out = np.lib.format.open_memmap(staging, "w+", np.uint8, shape)
        decoded = _decode_all(files, out, depth, workers, strict)
        out.flush()
        del out
    return decoded


@contextlib.contextmanager
def _building(lock: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock`` (created if need be): the processes of a node (every
    torchrun rank, or runs started together) that share a cache wait while one builds it."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass(frozen=True)
class Decoding:
    """How image files become the stored array: the side of the views in px (None: the first
    image's shorter side, at most 224), stop on an undecodable file instead of skipping it, the
    cache folder, the decoding processes (None: one per CPU), the depth rule of deep images and
    the stored side in px (None: :func:`stored_side` of the view's)."""

    image_size: int | None = None
    strict: bool = False
    cache_dir: str | os.PathLike | None = None
    workers: int | None = None
    depth: DepthScaling = "full"
    stored_side: int | None = None


def read_folder(path: Path, split: str, decoding: Decoding = Decoding()) -> ImageDataset:
    """The ``split`` of an image folder, decoded as ``decoding`` says: whole images of its
    channels on squares (module docstring; :mod:`simclrv2.data.decode`: grey stays one channel,
    deep images are scaled); with a cache folder the result is memory-mapped from there."""
    root = split_root(path, split)
    files, labels, classes = list_images(root)
    names = [f.relative_to(root).as_posix() for f in files]
    return read_images(root, files, labels, classes, names, decoding)


def read_images(
    root: Path,
    files: list[Path],
    labels: list[int],
    classes: list[str],
    names: list[str],
    decoding: Decoding,
) -> ImageDataset:
    """``files`` (their ``labels`` of ``classes``, their ``names``), decoded as
    :func:`read_folder` says; a class left without a decodable image is an error."""
    strict, cache_dir, depth = decoding.strict, decoding.cache_dir, decoding.depth
    size = decoding.image_size or _default_size(root, files)
    workers = decoding.workers or os.cpu_count() or 1
    limit = decoding.stored_side or stored_side(size)
    if cache_dir is None:
        images = np.zeros(_store_shape(files, limit, size), np.uint8)
        extents, skipped = _decode_all(files, images, depth, workers, strict)
        images = images[: len(extents)]
        listing = _listing(labels, classes, names, extents, skipped)
    else:
        stem = _cache_stem(root, files, labels, limit, depth)
        npy, meta = Path(cache_dir) / f"{stem}.npy", Path(cache_dir) / f"{stem}.json"
        with _building(Path(cache_dir) / f"{stem}.lock"):  # one process decodes, the rest map
            if not (meta.is_file() and npy.is_file()):  # .json written last: .npy complete
                shape = _store_shape(files, limit, size)  # read from the headers: a miss only
                extents, skipped = _decode_to_cache(npy, files, shape, depth, workers, strict)
                write_text(meta, json.dumps(_listing(labels, classes, names, extents, skipped)))
        listing = json.loads(meta.read_text())
        images = np.load(npy, mmap_mode="c")[: len(listing["names"])]
    if listing["skipped"]:
        name, problem = listing["skipped"][0]
        if not listing["names"]:
            raise UserError(
                f"{root}: none of the {len(files)} images can be decoded (first: {name}: {problem}); "
                "check that these are image files"
            )
        if strict:
            raise _undecodable(root / name, problem)
        warnings.warn(
            f"{root}: skipped {len(listing['skipped'])} images that cannot be decoded "
            f"(first: {name}: {problem}); load with strict to stop on them",
            stacklevel=2,
        )
    kept = np.bincount(np.asarray(listing["labels"], np.int64) + 1, minlength=len(classes) + 1)
    if classes and (kept[1:] == 0).any():
        lost = classes[int(np.argmin(kept[1:]))]
        raise UserError(
            f"{root}: class {lost!r} has no decodable image; add readable images of it or remove it"
        )
    return ImageDataset(
        torch.from_numpy(images),
        torch.tensor(listing["labels"], dtype=torch.int64),
        listing["classes"],
        listing["names"],
        listing["skipped"],
        torch.tensor(listing["extents"], dtype=torch.int64).reshape(-1, 2),
        size,
    )
