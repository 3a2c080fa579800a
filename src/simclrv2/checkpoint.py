"""Checkpoints that survive being killed: atomic, verified, never unpickling arbitrary objects.

Each checkpoint is a directory ``step-00001234/`` holding ``state.pt`` (``torch.save`` of tensors and
plain Python values) and ``manifest.json`` (step, sha256 of ``state.pt``). It is written in a temporary
directory, fsynced, and renamed into place, so a directory with a final name is always complete. The
newest ``keep`` checkpoints are kept; loading verifies the checksum and falls back to the previous
good checkpoint if the newest is damaged. Loading uses ``torch.load(weights_only=True)``: a file
that needs arbitrary pickled objects is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from simclrv2.errors import UserError

STATE, MANIFEST, PREFIX = "state.pt", "manifest.json", "step-"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | Path, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as checkpoint ``step`` under ``directory`` atomically; prune to ``keep``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{step:08d}"
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        with open(staging / STATE, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        manifest = {
            "step": step,
            "sha256": _sha256(staging / STATE),
            "bytes": (staging / STATE).stat().st_size,
        }
        with open(staging / MANIFEST, "w") as file:
            json.dump(manifest, file)
            file.flush()
            os.fsync(file.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
        _fsync_dir(directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for old in checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


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
    except (OSError, json.JSONDecodeError):
        return "its manifest is missing or unreadable"
    state = checkpoint / STATE
    if not state.is_file():
        return f"{STATE} is missing"
    if state.stat().st_size != manifest.get("bytes"):
        return f"{STATE} is truncated ({state.stat().st_size} of {manifest.get('bytes')} bytes)"
    if _sha256(state) != manifest.get("sha256"):
        return f"{STATE} does not match its sha256 checksum (corrupt)"
    return None


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """``torch.load`` a state file safely: tensors and plain values only, never arbitrary objects."""
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        raise UserError(
            f"{path} holds pickled objects other than tensors and plain values and was refused "
            f"(nothing in it was run): {str(error).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, OSError) as error:
        raise UserError(
            f"{path} cannot be read ({str(error).splitlines()[0]}); it is corrupt or truncated"
        ) from None


def load_latest(
    directory: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, Any] | None:
    """The newest checkpoint under ``directory`` that verifies, or None if there is none at all.

    Damaged checkpoints are skipped with a warning; if every one is damaged, that is an error.
    """
    found = checkpoints(directory)
    problems = []
    for checkpoint in reversed(found):
        problem = verify(checkpoint)
        if problem is None:
            if problems:
                warnings.warn(f"skipped damaged checkpoints: {'; '.join(problems)}", stacklevel=2)
            return load_state(checkpoint / STATE, map_location)
        problems.append(f"{checkpoint.name}: {problem}")
    if problems:
        raise UserError(f"no usable checkpoint in {directory}: {'; '.join(problems)}")
    return None
