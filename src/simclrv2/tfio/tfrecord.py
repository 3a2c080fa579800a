"""TFRecord framing, the container of TensorBoard event files: each record is its length (uint64,
little-endian), the masked CRC-32C of those 8 bytes, the record, and the record's masked CRC-32C."""

from __future__ import annotations

import struct

from simclrv2.tfio.crc32c import crc32c, mask


def frame(record: bytes) -> bytes:
    """One TFRecord frame around ``record``."""
    length = struct.pack("<Q", len(record))
    length_crc = struct.pack("<I", mask(crc32c(length)))
    return length + length_crc + record + struct.pack("<I", mask(crc32c(record)))
