"""A run directory: the resolved ``config.yaml``, ``environment.json`` (code version, hardware) and
one folder per stage, so that a run records itself and ``--resume DIR`` continues it."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch
import yaml

from simclrv2 import __version__, distributed
from simclrv2.config import Config, config_from_dict
from simclrv2.errors import UserError

CONFIG, ENVIRONMENT = "config.yaml", "environment.json"


def new_run_dir(command: str, config: Config, out: str | None) -> Path:
    """``out`` if given, else ``runs/<command>-<preset>-<timestamp>``; must be writable and not a
    finished run's directory. Checked before any training starts."""
    directory = (
        Path(out)
        if out
        else Path("runs") / f"{command}-{config.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    if (directory / CONFIG).exists():
        raise UserError(
            f"{directory} already holds a run; continue it with --resume {directory} or choose another --out"
        )
    check_writable(directory)
    return directory


def check_writable(directory: Path, needed_bytes: int = 50 << 20) -> None:
    """Fail now, not after an hour of training, if ``directory`` cannot be written or the disk is full."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = directory / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"cannot write to {directory} ({error.strerror}); choose a writable --out"
        ) from None
    free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
    if free < needed_bytes:
        raise UserError(
            f"only {free >> 20} MiB free on the disk of {directory}; free some space or choose another --out"
        )


def write_run_files(directory: Path, config: Config) -> None:
    if distributed.rank() != 0:
        return
    (directory / CONFIG).write_text(config.to_yaml())
    (directory / ENVIRONMENT).write_text(json.dumps(environment(), indent=2) + "\n")


def load_run_config(directory: Path) -> Config:
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise UserError(
            f"{directory} is not a run directory (no {CONFIG}); give the directory a run was started in"
        )
    return config_from_dict(yaml.safe_load(path.read_text()))


def environment() -> dict:
    """What produced the run: versions, commit, hardware."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
            cwd=Path(__file__).parent, check=False,
        ).stdout.strip()  # fmt: skip
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
