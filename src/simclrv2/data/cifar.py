"""CIFAR-10 and CIFAR-100 in the python-pickle layout, from the folder or straight from the .tar.gz.

``cifar-10-batches-py/`` holds ``data_batch_1`` ... ``data_batch_5`` (train), ``test_batch`` and
``batches.meta`` (``label_names``); ``cifar-100-python/`` holds ``train``, ``test`` and ``meta``
(``fine_label_names``; the 100 fine labels are used). Each batch is a pickled dict: ``data`` uint8
(N, 3072), each row the R, G and B planes of a 32x32 image (so a reshape gives CHW), ``labels``
(CIFAR-10) or ``fine_labels`` (CIFAR-100), and ``filenames``.

The batches ARE pickles, so they are read by an Unpickler that resolves only the few globals a
numpy array needs; anything else (e.g. an object whose ``__reduce__`` runs code) is refused before
it can run. An archive is read member by member and nothing is extracted, so no member path can
land anywhere; only regular-file members with the expected names are read.
"""

from __future__ import annotations

import codecs
import io
import pickle
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simclrv2.data.dataset import ImageDataset, check_split
from simclrv2.errors import UserError

IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR variant keeps its batches and which keys hold the labels."""

    folder: str
    splits: dict[str, tuple[str, ...]]
    meta: str
    label_key: str
    names_key: str


LAYOUTS = {
    "cifar10": Layout(
        "cifar-10-batches-py",
        {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
        "batches.meta",
        "labels",
        "label_names",
    ),
    "cifar100": Layout(
        "cifar-100-python",
        {"train": ("train",), "test": ("test",)},
        "meta",
        "fine_labels",
        "fine_label_names",
    ),
}

# The only globals a pickled numpy array refers to, under numpy 1 and 2 module names; protocol-2
# pickles written by Python 3 store bytes through _codecs.encode. Nothing here runs user code.
_reconstruct = np.ndarray((0,)).__reduce__()[0]
_frombuffer = np.zeros(1).__reduce_ex__(5)[0]
SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): codecs.encode,
}


ARCHIVE_ERRORS = (tarfile.TarError, OSError, EOFError, zlib.error)


def _member_name(member: tarfile.TarInfo) -> str:
    """A member's path without the "./" that some tar commands prepend."""
    return member.name.removeprefix("./")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers, strings, numbers and numpy arrays; refuses every other global."""

    def find_class(self, module: str, name: str) -> object:
        try:
            return SAFE_GLOBALS[module, name]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load the global {module}.{name}") from None


def unpickle_batch(data: bytes, source: str) -> dict[str, object]:
    """A CIFAR batch dict (keys as str) from pickle bytes, safely; a one-line error otherwise."""
    try:
        batch = RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # damaged pickles raise almost any type; all mean "not a batch"
        raise UserError(
            f"{source}: not a CIFAR batch ({error}); download the data set again"
        ) from None
    if not isinstance(batch, dict):
        raise UserError(f"{source}: not a CIFAR batch (a {type(batch).__name__}, not a dict)")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _entry(batch: dict[str, object], key: str, source: str) -> object:
    if key not in batch:
        raise UserError(f"{source}: not a CIFAR batch of this variant: no {key!r} entry")
    return batch[key]


def _texts(values: object, source: str, key: str) -> list[str]:
    """Names stored as Python 2 strings (bytes) or str, as str."""
    if not isinstance(values, (list, tuple)) or not all(
        isinstance(v, (bytes, str)) for v in values
    ):
        raise UserError(f"{source}: {key!r} must be a list of names")
    try:
        return [v.decode() if isinstance(v, bytes) else v for v in values]
    except UnicodeDecodeError:
        raise UserError(f"{source}: {key!r} holds names that are not UTF-8 text") from None


def _read_batch(
    batch: dict[str, object], layout: Layout, num_classes: int, source: str
) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """(images (N, 3, 32, 32), labels (N,), file names or None) of one checked batch."""
    data = _entry(batch, "data", source)
    try:
        labels = np.asarray(_entry(batch, layout.label_key, source))
    except (ValueError, TypeError):  # ragged or unconvertible
        raise UserError(f"{source}: {layout.label_key!r} is not a list of class numbers") from None
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == np.prod(IMAGE_SHAPE)
    ):
        found = (
            f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        )
        raise UserError(
            f"{source}: 'data' must be uint8 (N, 3072), the R, G, B planes of 32x32 images per "
            f"row; found {found}"
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{source}: {labels.size} labels for {len(data)} images")
    if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
        raise UserError(f"{source}: labels outside 0..{num_classes - 1}")
    names = _texts(batch["filenames"], source, "filenames") if "filenames" in batch else None
    if names is not None and len(names) != len(data):
        raise UserError(f"{source}: {len(names)} file names for {len(data)} images")
    return data.reshape(-1, *IMAGE_SHAPE), labels, names


def _read_members(path: Path, layout: Layout, names: tuple[str, ...]) -> dict[str, bytes]:
    """The bytes of ``layout.folder/<name>`` for each name, from a folder or a tar archive."""
    if path.is_dir():
        folder = path / layout.folder if (path / layout.folder).is_dir() else path
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise UserError(
                f"{folder / missing[0]} is missing; the {layout.folder} folder is incomplete"
            )
        return {n: (folder / n).read_bytes() for n in names}
    wanted = {f"{layout.folder}/{n}": n for n in names}
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(path, "r|*") as archive:  # one sequential pass, nothing extracted
            for member in archive:
                name = _member_name(member)
                if name not in wanted:
                    continue
                if not member.isfile():
                    raise UserError(
                        f"{path}: member {member.name} is not a regular file; "
                        "the archive is not a CIFAR download"
                    )
                found[wanted[name]] = archive.extractfile(member).read()
    except ARCHIVE_ERRORS as error:
        raise UserError(f"{path}: cannot read the archive ({error}); download it again") from None
    missing = [m for m, n in wanted.items() if n not in found]
    if missing:
        raise UserError(f"{path} has no member {missing[0]}; it is not a {layout.folder} archive")
    return found


def cifar_variant(path: Path) -> str | None:
    """ "cifar10" or "cifar100" if ``path`` is that layout's archive, its folder or the folder
    holding it; None otherwise."""
    if path.is_file():
        try:
            with tarfile.open(path, "r|*") as archive:
                first = next(iter(archive), None)
        except ARCHIVE_ERRORS:
            return None
        top = _member_name(first).split("/")[0] if first else ""
        return next((k for k, v in LAYOUTS.items() if v.folder == top), None)
    for variant, layout in LAYOUTS.items():
        holds_batches = all((path / n).is_file() for n in (layout.meta, layout.splits["test"][0]))
        if path.name == layout.folder or (path / layout.folder).is_dir() or holds_batches:
            return variant
    return None


def read_cifar(path: Path, split: str, variant: str) -> ImageDataset:
    """The ``split`` ("train" or "test") of ``variant`` ("cifar10" or "cifar100") from its
    folder, the folder holding that, or its .tar.gz."""
    layout = LAYOUTS[variant]
    check_split(split, tuple(layout.splits), path)
    files = layout.splits[split]
    members = _read_members(path, layout, (layout.meta, *files))
    meta_source = f"{path}:{layout.meta}"
    meta = unpickle_batch(members[layout.meta], meta_source)
    classes = _texts(_entry(meta, layout.names_key, meta_source), meta_source, layout.names_key)
    batches = [
        _read_batch(unpickle_batch(members[f], f"{path}:{f}"), layout, len(classes), f"{path}:{f}")
        for f in files
    ]
    images, labels, names = zip(*batches)
    return ImageDataset(
        torch.from_numpy(np.concatenate(images)),
        torch.from_numpy(np.concatenate(labels).astype(np.int64)),
        classes,
        None if None in names else [n for batch_names in names for n in batch_names],
    )
