"""What a run records: scalars in ``metrics.csv`` (long format, appended, so a resumed run continues the
same file) and as TensorBoard events, the log in ``log.txt`` and on the console, and a progress bar
with rate and ETA."""

from __future__ import annotations

import csv
import logging
import sys
import time
from pathlib import Path

from tqdm import tqdm

from simclrv2.tensorboard import EventWriter

LOG = logging.getLogger("simclrv2")
CSV_COLUMNS = ("stage", "epoch", "step", "name", "value", "time")


class _TqdmHandler(logging.Handler):
    """Console log lines that do not break an active progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(log_file: Path | None, enabled: bool = True) -> None:
    """Log INFO to the console and to ``log_file`` (appending); silent when not ``enabled``
    (processes other than rank 0)."""
    LOG.handlers.clear()
    LOG.propagate = False
    LOG.setLevel(logging.INFO if enabled else logging.WARNING)
    console = _TqdmHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    LOG.addHandler(console)
    if log_file is not None and enabled:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        file = logging.FileHandler(log_file)
        file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        LOG.addHandler(file)


class MetricsWriter:
    """Appends ``(stage, epoch, step, name, value, time)`` rows to ``metrics.csv`` and the same
    scalars, tagged ``<stage>/<name>``, to a TensorBoard event file beside it."""

    def __init__(self, path: Path, stage: str, enabled: bool = True) -> None:
        self.path, self.stage, self.enabled = path, stage, enabled
        if enabled:
            path.parent.mkdir(parents=True, exist_ok=True)
            new = not path.exists() or path.stat().st_size == 0
            self._file = open(path, "a", newline="")  # noqa: SIM115 (closed in close())
            self._csv = csv.writer(self._file)
            if new:
                self._csv.writerow(CSV_COLUMNS)
            self._events = EventWriter(path.parent)

    def write(self, step: int, epoch: float, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        now = round(time.time(), 3)
        for name, value in values.items():
            self._csv.writerow((self.stage, round(epoch, 4), step, name, float(value), now))
        self._file.flush()
        self._events.scalars(
            step, {f"{self.stage}/{name}": float(value) for name, value in values.items()}
        )

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._events.close()


def read_metrics(path: Path) -> list[dict]:
    """Rows of a ``metrics.csv``; for a step logged twice (a resumed run) the later row wins."""
    if not path.exists():
        return []
    latest: dict[tuple, dict] = {}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            row["epoch"], row["step"], row["value"] = (
                float(row["epoch"]),
                int(row["step"]),
                float(row["value"]),
            )
            latest[(row["stage"], row["name"], row["step"])] = row
    return list(latest.values())


def progress_bar(total: int, initial: int, description: str, enabled: bool = True) -> tqdm:
    """A bar over optimiser steps; the caller sets loss, lr and images/s as its postfix."""
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="step",
        dynamic_ncols=True,
        disable=not enabled,
        mininterval=1.0,
        file=sys.stderr,
        leave=True,
    )
