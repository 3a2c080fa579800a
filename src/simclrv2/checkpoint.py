"""Checkpoints that survive being killed: atomic, verified, never unpickling arbitrary objects.

Each checkpoint is a directory ``step-00001234/`` holding ``state.pt`` (``torch.save`` of tensors and
plain Python values) and ``manifest.json`` (step, size and sha256 of ``state.pt``), written as an
atomic directory (:mod:`simclrv2.atomic`), so a directory with a final name is always complete; a
failed write (a full disk) leaves the previous checkpoints as they were. The newest
``KEEP`` are kept; loading verifies the checksum and falls back to the previous good checkpoint if
the newest is damaged. Loading uses ``torch.load(weights_only=True)``: a file that needs arbitrary
pickled objects is refused before anything in it runs.

Training does not wait for the disk: :func:`host_copy` snapshots the state to host memory and a
:class:`BackgroundWriter` writes it on a thread while the next steps run. The sha256 is computed
as the bytes go out (no second read), and on resume rank 0 alone verifies and tells the others
which checkpoint to load.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import re
import shutil
import threading
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, BinaryIO

import torch
from torch import Tensor, nn

from simclrv2 import distributed
from simclrv2.atomic import atomic_directory, remove_stale_staging
from simclrv2.errors import UserError, first_line

STATE, MANIFEST, PREFIX = "state.pt", "manifest.json", "step-"
KEEP = 2  # checkpoints kept: the newest, and the previous one in case the newest is damaged
OPTIMIZER_BUFFERS = 2  # tensors an optimiser keeps per parameter, at most (AdamW; momentum: 1)


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    directory: str | Path, step: int, state: dict[str, Any], keep: int = KEEP
) -> Path:
    """Write ``state`` as checkpoint ``step`` under ``directory`` atomically; prune to ``keep``.

    A write that fails (a full disk) is a one-line error that leaves the previous checkpoints as
    they were; staging directories of writers that were killed are removed first.
    """
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(directory, PREFIX)
        final = _write(directory, step, state)
    except OSError as error:
        raise UserError(
            f"cannot write checkpoint {step} in {directory} ({error.strerror or error}); the "
            "previous checkpoints are kept: free some space, then resume the run"
        ) from None
    for old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _write(directory: Path, step: int, state: dict[str, Any]) -> Path:
    """``state`` and its manifest as the checkpoint directory of ``step``."""
    final = directory / f"{PREFIX}{step:08d}"
    with atomic_directory(final) as staging:
        with open(staging / STATE, "wb", buffering=0) as file:  # a full disk raises OSError
            hashing = _HashingFile(file)
            torch.save(state, hashing)
        manifest = {"step": step, "sha256": hashing.digest.hexdigest(), "bytes": hashing.bytes}
        with open(staging / MANIFEST, "w") as file:
            json.dump(manifest, file)
    return final


class _HashingFile:
    """A write-only file that hashes (sha256) and counts the bytes written through it."""

    def __init__(self, file: BinaryIO) -> None:
        self.file, self.digest, self.bytes = file, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        self.bytes += len(view)
        size = len(view)
        while view:  # an unbuffered file may take part of a block
            view = view[self.file.write(view) :]
        return size

    def flush(self) -> None:
        self.file.flush()


def host_copy(state: Any) -> Any:
    """``state`` (nested dicts, lists and tuples) with every tensor copied to host memory, so
    that training may change the originals while the copy is written. Copies off a GPU are
    queued without blocking (into pinned memory) and waited for once, at the end."""
    on_gpu = False

    def copy(value: Any) -> Any:
        nonlocal on_gpu
        if isinstance(value, Tensor):
            if value.device.type == "cpu":
                return value.detach().clone()
            on_gpu = True
            return value.detach().to("cpu", non_blocking=True)
        if isinstance(value, dict):
            return {key: copy(item) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(copy(item) for item in value)
        return value

    copied = copy(state)
    if on_gpu:
        torch.cuda.synchronize()  # CUDA only: the queued copies have landed
    return copied


class BackgroundWriter:
    """Writes one thing at a time on a background thread. :meth:`submit` waits for the previous
    write, then starts the next; :meth:`wait` waits and raises the write's error in the caller's
    thread. Leaving the ``with`` block waits too: a write's error is raised, or, if another
    exception is already on its way, noted on it."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def submit(self, write: Callable[..., object], *args: object) -> None:
        self.wait()

        def run() -> None:
            try:
                write(*args)
            except BaseException as error:  # raised in the caller's thread by wait()
                self._error = error

        # not a daemon: an interpreter that exits still finishes the write first
        self._thread = threading.Thread(target=run, name="simclrv2-checkpoint")
        self._thread.start()

    def wait(self) -> None:
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error

    def __enter__(self) -> BackgroundWriter:
        return self

    def __exit__(self, kind: object, error: BaseException | None, traceback: object) -> None:
        if error is None:
            self.wait()
            return
        try:
            self.wait()
        except Exception as failed:
            error.add_note(f"and the checkpoint being written failed: {failed}")


def space_needed(directory: Path, modules: Iterable[nn.Module]) -> int:
    """Bytes of disk the checkpoints of ``modules`` still need in ``directory``: ``KEEP`` and one
    being written, less those already there, each holding the modules' tensors and up to
    ``OPTIMIZER_BUFFERS`` per parameter."""
    tensors = sum(t.numel() * t.element_size() for m in modules for t in m.state_dict().values())
    copies = max(1, KEEP + 1 - len(checkpoints(directory)))
    return copies * (1 + OPTIMIZER_BUFFERS) * tensors


def checkpoints(directory: str | Path) -> list[Path]:
    """Checkpoint directories under ``directory``, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify(checkpoint: Path) -> str | None:
    """None if ``checkpoint`` is complete and its checksum matches, else what is wrong."""
    try:
        manifest = json.loads((checkpoint / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return "its manifest is missing or unreadable"
    if not isinstance(manifest, dict):
        return "its manifest is not a checkpoint manifest"
    state = checkpoint / STATE
    if not state.is_file():
        return f"{STATE} is missing"
    if state.stat().st_size != manifest.get("bytes"):
        return f"{STATE} is truncated ({state.stat().st_size} of {manifest.get('bytes')} bytes)"
    if sha256(state) != manifest.get("sha256"):
        return f"{STATE} does not match its sha256 checksum (corrupt)"
    return None


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load`` a state file safely: tensors and plain values only, never arbitrary objects."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        refused = re.search(r"GLOBAL (\S+)", str(error))
        if refused is None:  # the restricted unpickler also rejects damaged opcodes
            raise UserError(f"{path} cannot be read: it is corrupt") from None
        raise UserError(
            f"{path} refers to {refused.group(1)!r}, not a tensor or a plain value, and was refused "
            "(nothing in it was run); load only checkpoints that simclrv2 wrote"
        ) from None
    except Exception as error:  # a damaged file raises almost any type; all mean "unreadable"
        raise UserError(
            f"{path} cannot be read ({first_line(error)}); it is corrupt or truncated"
        ) from None
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a checkpoint's state")
    return state


def load_latest(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The newest checkpoint under ``directory`` that verifies, or None if there is none at all.

    Damaged checkpoints are skipped with a warning; if every one is damaged, that is an error.
    Under several processes rank 0 alone reads the checksums and every process loads the
    checkpoint it chose (every process calls this at the same point).
    """
    verdict = _newest_good(directory) if distributed.rank() == 0 else None
    chosen, problems = distributed.broadcast_object(verdict)
    if chosen is None:
        if problems:
            raise UserError(f"no usable checkpoint in {directory}: {'; '.join(problems)}")
        return None
    if problems:
        warnings.warn(f"skipped damaged checkpoints: {'; '.join(problems)}", stacklevel=2)
    return load_state(chosen / STATE, map_location)


def _newest_good(directory: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that verifies (None if none does), and what is wrong with each
    newer one."""
    problems = []
    for checkpoint in reversed(checkpoints(directory)):
        problem = verify(checkpoint)
        if problem is None:
            return checkpoint, problems
        problems.append(f"{checkpoint.name}: {problem}")
    return None, problems
