"""A run directory: the resolved ``config.yaml``, ``environment.json`` (code version, hardware),
``inputs.json`` (the command's own inputs: the model it starts from, its label spec) and one folder
per stage, so that a run records itself and ``--resume DIR`` continues it.

The directory is checked (writable, free space) before any training, and its files are written
atomically, so a run killed at any moment can be resumed from what it holds.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import torch
import yaml

from simclrv2 import distributed
from simclrv2.atomic import write_text
from simclrv2.checkpoint import PREFIX
from simclrv2.config import Config, config_from_dict
from simclrv2.errors import UserError
from simclrv2.version import __version__

CONFIG, ENVIRONMENT, INPUTS = "config.yaml", "environment.json", "inputs.json"
MIN_FREE_BYTES = 50 << 20  # the logs, metrics and a small model's checkpoints


@contextlib.contextmanager
def new_run(
    command: str, config: Config, out: str | Path | None, inputs: dict | None = None
) -> Iterator[Path]:
    """The directory of a new run, holding its files: ``out`` if given, else
    ``runs/<command>-<preset>-<timestamp>``; refused if it holds another run, is not writable or
    its disk is full. If the body fails with a :class:`UserError` before any checkpoint exists,
    what the run added is removed again: a run that never started training leaves nothing behind,
    and the same ``--out`` can be given again."""
    directory = (
        Path(out)
        if out
        else Path("runs") / f"{command}-{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if (directory / CONFIG).exists():
        raise UserError(
            f"{directory} already holds a run of another command, config or inputs; continue it "
            f"with --resume {directory} or choose another --out"
        )
    made = _missing(directory)
    before = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    check_writable(directory)
    try:
        write_run_files(directory, config, inputs or {})
        yield directory
    except UserError:
        if not any(directory.rglob(f"{PREFIX}*")):
            for entry in directory.iterdir():
                if entry.name in before:
                    continue
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
            _remove_empty(made)
        raise


def check_writable(directory: Path, needed_bytes: int = MIN_FREE_BYTES) -> None:
    """Fail now, not after an hour of training, if ``directory`` cannot be created and written or
    its disk has less than ``needed_bytes`` free. On failure, directories it created are removed."""
    created = _missing(directory)
    try:
        _probe(directory, needed_bytes)
    except UserError:
        _remove_empty(created)
        raise


def _probe(directory: Path, needed_bytes: int) -> None:
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file; the run needs a directory there")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
        disk = os.statvfs(directory)
    except OSError as error:
        raise UserError(
            f"cannot write to {directory} ({error.strerror or error}); choose a writable directory"
        ) from None
    free = disk.f_bavail * disk.f_frsize
    if free < needed_bytes:
        raise UserError(
            f"only {free >> 20} MiB free on the disk of {directory}, {-(-needed_bytes >> 20)} MiB "
            "needed; free some space or choose a directory on another disk"
        )


def _missing(directory: Path) -> list[Path]:
    """``directory`` and its ancestors that do not exist yet, deepest first."""
    return [p for p in (directory, *directory.parents) if not p.exists()]


def _remove_empty(directories: list[Path]) -> None:
    for path in directories:
        with contextlib.suppress(OSError):
            path.rmdir()


def write_run_files(directory: Path, config: Config, inputs: dict) -> None:
    if distributed.rank() != 0:
        return
    write_text(directory / CONFIG, config.to_yaml())
    write_text(directory / ENVIRONMENT, json.dumps(environment(), indent=2) + "\n")
    write_text(directory / INPUTS, json.dumps(inputs, indent=2) + "\n")


def load_run_inputs(directory: Path) -> dict:
    """The inputs a run's command was given (``--init``, ``--teacher``, ``--labels``), for its
    resume; empty for a run that recorded none."""
    path = Path(directory) / INPUTS
    try:
        inputs = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        inputs = None
    if not isinstance(inputs, dict):
        raise UserError(f"{path} is damaged; start a new run")
    return inputs


def load_run_config(directory: Path) -> Config:
    """The resolved config a run was started with."""
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise UserError(
            f"{directory} is not a run directory (no {CONFIG}); give the directory a run was started in"
        )
    try:
        mapping = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        mapping = None
    if not isinstance(mapping, dict):
        raise UserError(f"{path} is not a saved config (unreadable or damaged); start a new run")
    return config_from_dict(mapping)


def environment() -> dict:
    """What produced the run: versions, commit, hardware."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        commit = ""
    return {
        "simclrv2": __version__,
        "git_commit": commit or None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "world_size": distributed.world_size(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
