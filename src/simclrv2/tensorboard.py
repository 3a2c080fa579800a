"""TensorBoard event files without TensorFlow: scalar summaries, one ``Event`` record each.

The file is a sequence of TFRecord frames (:mod:`simclrv2.tfio.tfrecord`), each holding one serialised
``Event`` protocol buffer; the first record announces ``brain.Event:2``.
``Event``: wall_time (1, double), step (2, int64), file_version (3, string), summary (5);
``Summary.Value``: tag (1, string), simple_value (2, float).
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

from simclrv2.tfio.protowire import FIXED32, FIXED64, field
from simclrv2.tfio.tfrecord import frame


def _float_bits(value: float, fmt: str) -> int:
    packed = struct.pack("<" + fmt, value)
    return int.from_bytes(packed, "little")


def _event(
    wall_time: float,
    step: int = 0,
    file_version: str | None = None,
    scalars: dict[str, float] | None = None,
) -> bytes:
    message = field(1, _float_bits(wall_time, "d"), FIXED64) + field(2, step)
    if file_version is not None:
        message += field(3, file_version.encode())
    if scalars:
        values = b"".join(
            field(1, field(1, tag.encode()) + field(2, _float_bits(value, "f"), FIXED32))
            for tag, value in scalars.items()
        )
        message += field(5, values)
    return message


class EventWriter:
    """Appends scalar events to ``directory/events.out.tfevents.<time>.<host>``."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}"
        self._file = open(self.path, "ab")  # noqa: SIM115 (closed in close())
        self._file.write(frame(_event(time.time(), file_version="brain.Event:2")))

    def scalars(self, step: int, values: dict[str, float]) -> None:
        self._file.write(frame(_event(time.time(), step, scalars=values)))
        self._file.flush()

    def close(self) -> None:
        self._file.close()
