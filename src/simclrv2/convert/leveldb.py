"""LevelDB tables, the format of a TensorFlow checkpoint's ``.index`` file, in plain Python.

A table is a sequence of prefix-compressed blocks, each followed by a 5-byte trailer (compression
type, masked CRC-32C), then an index block of handles to them and a 48-byte footer that ends in
:data:`TABLE_MAGIC`. :func:`read_table` checks every block's checksum; :func:`write_table` writes
the layout TensorFlow writes (uncompressed), so that tests and benchmarks can build checkpoints
without TensorFlow. Compressed (Snappy) blocks are refused with an error naming the file.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

from simclrv2.errors import UserError
from simclrv2.tfio import protowire
from simclrv2.tfio.crc32c import crc32c, mask

TABLE_MAGIC = 0xDB4775248B80FB57  # last 8 bytes of every LevelDB table
FOOTER_BYTES = 48  # two block handles padded to 40 bytes, then the magic
TRAILER_BYTES = 5  # after each block: compression type (1 byte), masked CRC-32C (4 bytes)
RESTART_INTERVAL = 16  # keys between full (not prefix-compressed) keys in a written block
BLOCK_BYTES = 256 << 10  # TensorFlow's table block size


def _block_handle(buf: bytes, pos: int) -> tuple[int, int, int]:
    """A BlockHandle (two varints: offset, size) at ``pos`` -> (offset, size, end position)."""
    offset, pos = protowire.read_varint(buf, pos)
    size, pos = protowire.read_varint(buf, pos)
    return offset, size, pos


def _read_block(table: bytes, offset: int, size: int, path: Path) -> memoryview:
    """A block's contents after checking its trailer (no compression, CRC-32C of block + type)."""
    if offset + size + TRAILER_BYTES > len(table):
        raise UserError(f"{path} is truncated (a block runs past its end); download it again")
    block = memoryview(table)[offset : offset + size]
    kind = table[offset + size]
    stored = int.from_bytes(table[offset + size + 1 : offset + size + TRAILER_BYTES], "little")
    if kind != 0:
        raise UserError(
            f"{path} has compressed blocks (type {kind}), which this reader does not support; "
            "re-save the checkpoint with TensorFlow's default (uncompressed) writer"
        )
    if mask(crc32c(table[offset : offset + size + 1])) != stored:
        raise UserError(f"{path} is corrupt (a block fails its CRC-32C check); download it again")
    return block


def _block_items(block: memoryview) -> Iterator[tuple[bytes, bytes]]:
    """Decode a block: prefix-compressed (key, value) records, then the restart-point array."""
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    end = len(block) - 4 - 4 * restarts
    pos, key = 0, b""
    while pos < end:
        shared, pos = protowire.read_varint(block, pos)
        unshared, pos = protowire.read_varint(block, pos)
        value_size, pos = protowire.read_varint(block, pos)
        key = key[:shared] + bytes(block[pos : pos + unshared])
        pos += unshared
        yield key, bytes(block[pos : pos + value_size])
        pos += value_size


def read_table(path: Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) records of a LevelDB table file, in key order."""
    table = path.read_bytes()
    if len(table) < FOOTER_BYTES or int.from_bytes(table[-8:], "little") != TABLE_MAGIC:
        raise UserError(
            f"{path} is truncated or not a checkpoint index (no LevelDB footer); download it again"
        )
    footer = table[-FOOTER_BYTES:]
    try:
        _, _, pos = _block_handle(footer, 0)  # the metaindex block: unused by TensorBundle
        index_offset, index_size, _ = _block_handle(footer, pos)
        items = []
        for _, handle in _block_items(_read_block(table, index_offset, index_size, path)):
            offset, size, _ = _block_handle(handle, 0)
            items.extend(_block_items(_read_block(table, offset, size, path)))
    except (protowire.WireError, struct.error):
        raise UserError(f"{path} is corrupt (malformed table block); download it again") from None
    return items


class _BlockBuilder:
    """One table block: prefix-compressed records, a full key every ``interval`` records."""

    def __init__(self, interval: int) -> None:
        self.interval, self.buffer, self.restarts = interval, bytearray(), [0]
        self.count, self.last_key = 0, b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count < self.interval:
            limit = min(len(key), len(self.last_key))
            while shared < limit and key[shared] == self.last_key[shared]:
                shared += 1
        else:
            self.restarts.append(len(self.buffer))
            self.count = 0
        self.buffer += protowire.varint(shared) + protowire.varint(len(key) - shared)
        self.buffer += protowire.varint(len(value)) + key[shared:] + value
        self.count, self.last_key = self.count + 1, key

    def size(self) -> int:
        return len(self.buffer) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        return bytes(self.buffer) + struct.pack(
            f"<{len(self.restarts) + 1}I", *self.restarts, len(self.restarts)
        )


def _separator(start: bytes, limit: bytes) -> bytes:
    """A short key >= ``start`` and < ``limit`` (LevelDB's FindShortestSeparator)."""
    common = 0
    while common < min(len(start), len(limit)) and start[common] == limit[common]:
        common += 1
    if (
        common < min(len(start), len(limit))
        and start[common] < 0xFF
        and start[common] + 1 < limit[common]
    ):
        return start[:common] + bytes([start[common] + 1])
    return start


def _successor(key: bytes) -> bytes:
    """A short key >= ``key`` (LevelDB's FindShortSuccessor)."""
    for i, byte in enumerate(key):
        if byte != 0xFF:
            return key[:i] + bytes([byte + 1])
    return key


def write_table(
    path: Path, items: list[tuple[bytes, bytes]], block_bytes: int = BLOCK_BYTES
) -> None:
    """Write sorted (key, value) records as an uncompressed LevelDB table, block for block as
    TensorFlow's table builder does (so a TF1 checkpoint is rewritten byte for byte)."""
    file, index = bytearray(), []

    def append(contents: bytes) -> bytes:
        handle = protowire.varint(len(file)) + protowire.varint(len(contents))
        file.extend(contents + b"\0" + struct.pack("<I", mask(crc32c(contents + b"\0"))))
        return handle

    block, pending, block_last = _BlockBuilder(RESTART_INTERVAL), None, b""
    for key, value in items:
        if pending is not None:  # the finished block's index key must sort before this key
            index.append((_separator(block_last, key), pending))
            pending = None
        block.add(key, value)
        if block.size() >= block_bytes:
            block_last, pending = key, append(block.finish())
            block = _BlockBuilder(RESTART_INTERVAL)
    if block.count:
        block_last, pending = block.last_key, append(block.finish())
    metaindex = append(_BlockBuilder(1).finish())
    if pending is not None:
        index.append((_successor(block_last), pending))
    index_block = _BlockBuilder(1)
    for key, handle in index:
        index_block.add(key, handle)
    footer = (metaindex + append(index_block.finish())).ljust(FOOTER_BYTES - 8, b"\0")
    path.write_bytes(bytes(file + footer + struct.pack("<Q", TABLE_MAGIC)))
