"""Source strings (``--data``, ``--labelled``, ``--unlabelled``, ``--test``) to data sets.

Forms: nothing or ``embedded``; a path, whose format is judged from what it holds (IDX files, a
CIFAR folder or .tar.gz, an ``stl10_binary`` folder, a ``.csv`` of ``path,label`` rows, else a
folder of images); or a path with an explicit prefix, ``idx:``, ``cifar10:``, ``cifar100:``,
``stl10:``, ``csv:`` or ``folder:``, for when the detection guesses wrong. Any form may end in
``@SPLIT`` to name one of its splits, e.g. ``stl10:data/stl10_binary@unlabeled``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from simclrv2.data.cifar import cifar_variant, read_cifar
from simclrv2.data.dataset import ImageDataset, check_split
from simclrv2.data.decode import DepthScaling
from simclrv2.data.embedded import PER_CLASS as EMBEDDED_SPLITS
from simclrv2.data.embedded import load_embedded
from simclrv2.data.folder import Decoding, folder_splits, read_folder
from simclrv2.data.idx import idx_directory, idx_splits, read_idx_dir
from simclrv2.data.labels_csv import read_labels_csv
from simclrv2.data.stl10 import read_stl10, stl10_directory, stl10_splits
from simclrv2.errors import UserError

EMBEDDED, FOLDER, CSV = "embedded", "folder", "csv"
SPLIT_NAMES = ("train", "test", "val", "unlabeled", "unlabelled")  # what may follow an "@"
# format prefix -> reader of (path, split) for the formats stored as arrays
ARRAY_READERS: dict[str, Callable[[Path, str], ImageDataset]] = {
    "idx": read_idx_dir,
    "cifar10": partial(read_cifar, variant="cifar10"),
    "cifar100": partial(read_cifar, variant="cifar100"),
    "stl10": read_stl10,
}
FORMATS = (EMBEDDED, *ARRAY_READERS, CSV, FOLDER)


def detect_format(path: Path) -> str:
    """The format that reads ``path``, judged from the files it holds."""
    if path.is_file():
        if path.suffix.lower() == ".csv":
            return CSV
        variant = cifar_variant(path)
        if variant is None:
            raise UserError(
                f"{path} is a file but neither a CSV of path,label rows nor a CIFAR .tar.gz; "
                "pass a data folder, a CSV or a CIFAR archive"
            )
        return variant
    if idx_directory(path):
        return "idx"
    if stl10_directory(path):
        return "stl10"
    return cifar_variant(path) or FOLDER


def split_suffix(source: str | None) -> tuple[str | None, str | None]:
    """(the source, the split its ``@SPLIT`` suffix names, else None)."""
    if source is None:
        return None, None
    rest, at, split = source.rpartition("@")
    if at and split in SPLIT_NAMES and not Path(source).expanduser().exists():
        return rest, split
    return source, None


def parse_source(source: str | None) -> tuple[str, Path | None]:
    """(format, path) of a source string without its ``@SPLIT``; the path is None for the
    embedded set."""
    if source is None or source == EMBEDDED:
        return EMBEDDED, None
    prefix, colon, rest = source.partition(":")
    explicit = colon and prefix in FORMATS and prefix != EMBEDDED
    path = Path(rest if explicit else source).expanduser()
    if not path.exists():
        raise UserError(
            f"{path} does not exist; pass a data folder or archive, or nothing for the embedded set"
        )
    return (prefix if explicit else detect_format(path)), path


def source_splits(source: str | None) -> tuple[str, ...]:
    """The splits a source holds (without reading its images); one named by ``@SPLIT`` alone."""
    source, named = split_suffix(source)
    if named is not None:
        return (named,)
    kind, path = parse_source(source)
    if path is None:
        return tuple(EMBEDDED_SPLITS)
    if kind == FOLDER:
        return tuple(folder_splits(path))
    if kind == CSV:
        return ("train",)
    if kind == "idx":
        return idx_splits(path)
    if kind == "stl10":
        return stl10_splits(path)
    return ("train", "test")  # CIFAR


def load_dataset(
    source: str | None,
    split: str = "train",
    *,
    image_size: int | None = None,
    strict: bool = False,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    rgb: bool = False,
    depth: DepthScaling = "full",
    stored_side: int | None = None,
) -> ImageDataset:
    """The ``split`` ("train", "test" or "unlabeled") of a data source as an :class:`ImageDataset`.

    ``source`` is None or "embedded" for the embedded Fashion-MNIST subset, a path (format
    detected from its contents) or ``format:path``; a ``@SPLIT`` suffix overrides ``split``.
    ``image_size`` gives every image that side once, at load time (image folders are decoded at
    it; default: the data's own size, at most 224 px for folders). ``strict``, ``cache_dir`` and
    ``workers`` apply to image folders and CSVs: stop on an undecodable image instead of skipping
    it, keep the decoded array there as a memory-mapped ``.npy``, and the number of decoding
    processes; so do ``depth``, the scaling of 16-bit and float images
    (:mod:`simclrv2.data.decode`), and ``stored_side``, the longer side of each whole image as
    stored (:mod:`simclrv2.data.folder`). ``rgb`` repeats greyscale into 3 channels.
    """
    source, named = split_suffix(source)
    split = named or split
    kind, path = parse_source(source)
    decoding = Decoding(image_size, strict, cache_dir, workers, depth, stored_side)
    if path is None:
        dataset = load_embedded(split)
    elif kind == FOLDER:
        dataset = read_folder(path, split, decoding)
    elif kind == CSV:
        check_split(split, ("train",), path)
        dataset = read_labels_csv(path, decoding)
    else:
        dataset = ARRAY_READERS[kind](path, split)
    if image_size is not None:
        dataset = dataset.resized(image_size)
    return dataset.to_rgb() if rgb else dataset
