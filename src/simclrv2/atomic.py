"""Atomic writes: a file or a directory appears complete under its final name, or not at all.

One rule for everything the library writes that a later run reads (configs, results, checkpoints,
exports, decoded-image caches, embeddings): write a staging path beside the target (the same
directory, so the rename stays on one file system), fsync what was written, ``os.replace`` it over
the target, then fsync the directory so that the rename survives a power cut. A write that fails
removes its staging path and leaves the previous version in place. Staging names are
``.<target name>.<process id>.tmp``: hidden, distinct per process (several processes of one run
may fill the same cache at once), and found again by :func:`remove_stale_staging`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path


def staging_path(target: Path) -> Path:
    """Where this process writes ``target`` before renaming it into place."""
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _fsync(path: Path) -> None:
    """Flush ``path`` (a file or a directory) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_file(target: str | os.PathLike) -> Iterator[Path]:
    """Yield the staging path of ``target`` to write; when the body returns, the file replaces
    ``target`` in one step."""
    target = Path(target)
    staging = staging_path(target)
    try:
        yield staging
        _fsync(staging)
        os.replace(staging, target)
        _fsync(target.parent)
    finally:
        _remove(staging)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Replace ``target`` with ``text``: a killed process leaves the old file or the new one."""
    with atomic_file(target) as staging:
        staging.write_text(text)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty staging directory for ``target``; when the body returns, its files are
    fsynced and it takes ``target``'s place (an existing ``target`` is moved aside, then removed)."""
    target = Path(target)
    staging, replaced = staging_path(target), target.with_name(f".{target.name}.{os.getpid()}.old")
    _remove(staging)
    staging.mkdir(parents=True)
    try:
        yield staging
        for path in staging.rglob("*"):
            _fsync(path)
        if target.exists():
            os.replace(target, replaced)
        os.replace(staging, target)
        _fsync(target.parent)
    finally:
        _remove(staging)
        _remove(replaced)


def remove_stale_staging(directory: str | os.PathLike, names: str) -> None:
    """Remove what killed writers of targets named ``names*`` left in ``directory``. Only for
    targets that one process writes at a time (checkpoints and exports: rank 0)."""
    for stale in Path(directory).glob(f".{names}*"):
        if stale.name.endswith((".tmp", ".old")):
            _remove(stale)
