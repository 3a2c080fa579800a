"""TensorFlow checkpoints (the TensorBundle format) read and written with numpy alone.

A checkpoint with prefix ``P`` is ``P.index``, a LevelDB table (:mod:`simclrv2.convert.leveldb`) mapping each tensor name to a
``BundleEntryProto`` (dtype, shape, shard, offset, size, masked CRC-32C), plus the data shards
``P.data-00000-of-0000N`` holding the raw little-endian bytes. The key "" holds the
``BundleHeaderProto`` (shard count, endianness). :class:`TensorBundle` lists the entries and reads
any tensor on demand, checking its CRC-32C; :func:`write_bundle` writes the same format, so tests
and benchmarks can build checkpoints from names, shapes and values without TensorFlow.

Not supported, with an error naming the file: compressed (Snappy) index blocks, partitioned
tensors (entries made of slices), big-endian checkpoints.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simclrv2.convert.leveldb import read_table, write_table
from simclrv2.errors import UserError
from simclrv2.tfio import protowire
from simclrv2.tfio.crc32c import crc32c, mask

# DataType enum of tensorflow/core/framework/types.proto -> name; numpy dtype of the fixed-size ones
DTYPE_NAMES = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    9: "int64",
    10: "bool",
    17: "uint16",
    19: "float16",
    22: "uint32",
    23: "uint64",
}
NUMPY_DTYPES = {
    name: np.dtype(name).newbyteorder("<") for name in DTYPE_NAMES.values() if name != "string"
}
_DTYPE_IDS = {name: number for number, name in DTYPE_NAMES.items()}
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # TF2: the TrackableObjectGraph, a string
READ_CHUNK = 8 << 20  # bytes read (and checksummed) at a time


@dataclass(frozen=True)
class Entry:
    """One tensor of a checkpoint, as its index describes it."""

    name: str
    dtype: str  # numpy-style name, or "DT_<n>" for a type this reader cannot decode
    shape: tuple[int, ...]
    shard: int
    offset: int  # bytes from the start of the shard
    size: int  # bytes
    crc32c: int  # masked, as stored
    slices: int = 0  # > 0: a partitioned tensor, stored in pieces under other keys

    @property
    def numel(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _parse_entry(name: str, value: bytes) -> Entry:
    fields = protowire.parse(value)
    dtype_id = fields.get(1, [0])[0]
    shape_fields = protowire.parse(fields.get(2, [b""])[0])
    shape = tuple(
        protowire.signed64(protowire.parse(dim).get(1, [0])[0]) for dim in shape_fields.get(2, [])
    )
    return Entry(
        name=name,
        dtype=DTYPE_NAMES.get(dtype_id, f"DT_{dtype_id}"),
        shape=shape,
        shard=fields.get(3, [0])[0],
        offset=protowire.signed64(fields.get(4, [0])[0]),
        size=protowire.signed64(fields.get(5, [0])[0]),
        crc32c=fields.get(6, [0])[0],
        slices=len(fields.get(7, [])),
    )


def _encode_entry(dtype_id: int, shape: tuple[int, ...], offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(protowire.field(2, protowire.field(1, d) if d else b"") for d in shape)
    return b"".join(
        (
            protowire.field(1, dtype_id),
            protowire.field(2, dims),
            protowire.field(4, offset) if offset else b"",
            protowire.field(5, size) if size else b"",
            protowire.field(6, crc, protowire.FIXED32),
        )
    )


def shard_path(prefix: Path, shard: int, shards: int) -> Path:
    """``prefix.data-0000k-of-0000n``."""
    return prefix.with_name(f"{prefix.name}.data-{shard:05d}-of-{shards:05d}")


class TensorBundle:
    """A checkpoint on disk, opened from its prefix (``.../model.ckpt-250228``, ``.../variables``).

    ``entries`` maps every tensor name to its :class:`Entry`; :meth:`read` loads one tensor.
    """

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        if not self.index_path.is_file():
            raise UserError(f"{self.index_path} does not exist; pass the checkpoint's prefix")
        items = read_table(self.index_path)
        if not items or items[0][0] != b"":
            raise UserError(f"{self.index_path} has no bundle header; it is not a TF checkpoint")
        try:
            header = protowire.parse(items[0][1])
            self.num_shards = header.get(1, [1])[0]
            entries = [_parse_entry(key.decode(), value) for key, value in items[1:]]
        except (protowire.WireError, UnicodeDecodeError):
            raise UserError(f"{self.index_path} has a malformed entry; download it again") from None
        if header.get(2, [0])[0] != 0:
            raise UserError(f"{self.index_path} is a big-endian checkpoint, which is not supported")
        self.entries: dict[str, Entry] = {entry.name: entry for entry in entries}
        for shard in sorted({entry.shard for entry in entries if entry.size}):
            path = shard_path(self.prefix, shard, self.num_shards)
            if not path.is_file():
                raise UserError(
                    f"{path} is missing (data shard {shard + 1} of {self.num_shards}); "
                    "download it beside the index"
                )

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def _chunks(self, entry: Entry) -> Iterator[bytes]:
        """The entry's bytes in pieces of at most ``READ_CHUNK``, after a size check."""
        path = shard_path(self.prefix, entry.shard, self.num_shards)
        if entry.offset + entry.size > path.stat().st_size:
            raise UserError(
                f"{path} is truncated: tensor {entry.name!r} needs bytes up to "
                f"{entry.offset + entry.size}, the file has {path.stat().st_size}; download it again"
            )
        with path.open("rb") as file:
            file.seek(entry.offset)
            for start in range(0, entry.size, READ_CHUNK):
                yield file.read(min(READ_CHUNK, entry.size - start))

    def _check(self, entry: Entry, crc: int) -> None:
        if mask(crc) != entry.crc32c:
            path = shard_path(self.prefix, entry.shard, self.num_shards)
            raise UserError(
                f"{path}: tensor {entry.name!r} fails its CRC-32C check (stored {entry.crc32c:#010x}, "
                f"computed {mask(crc):#010x}); the file is corrupt, download it again"
            )

    def read(self, name: str) -> np.ndarray:
        """The tensor ``name`` (strings as an object array of bytes), its CRC-32C checked."""
        entry = self.entries[name]
        if entry.slices:
            raise UserError(
                f"{self.index_path}: tensor {name!r} is partitioned into {entry.slices} slices, "
                "which this reader does not support; re-save it unpartitioned"
            )
        if entry.dtype == "string":
            return self._read_strings(entry)
        dtype = NUMPY_DTYPES.get(entry.dtype)
        if dtype is None:
            raise UserError(
                f"{self.index_path}: tensor {name!r} has unsupported dtype {entry.dtype}"
            )
        if entry.size != entry.numel * dtype.itemsize:
            raise UserError(
                f"{self.index_path}: tensor {name!r} has {entry.size} bytes for shape "
                f"{entry.shape} of {entry.dtype}; the index is corrupt"
            )
        out = np.empty(entry.shape, dtype=dtype)
        flat, crc, pos = out.reshape(-1).view(np.uint8), 0, 0
        for chunk in self._chunks(entry):
            flat[pos : pos + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            crc, pos = crc32c(chunk, crc), pos + len(chunk)
        self._check(entry, crc)
        return out

    def _read_strings(self, entry: Entry) -> np.ndarray:
        """String tensors: varint lengths, a masked CRC of the lengths, then the bytes. The entry's
        CRC covers each length as a little-endian uint32 (uint64 past 4 GiB), that masked CRC and
        the bytes."""
        data = b"".join(self._chunks(entry))
        lengths, pos = [], 0
        try:
            for _ in range(entry.numel):
                length, pos = protowire.read_varint(data, pos)
                lengths.append(length)
        except protowire.WireError:
            lengths = []
        crc = 0
        for length in lengths:
            crc = crc32c(struct.pack("<I" if length <= 0xFFFFFFFF else "<Q", length), crc)
        crc = crc32c(data[pos : pos + 4], crc)
        crc = crc32c(data[pos + 4 :], crc)
        self._check(entry, crc)
        out, pos = [], pos + 4
        for length in lengths:
            out.append(data[pos : pos + length])
            pos += length
        array = np.empty(len(out), dtype=object)
        array[:] = out
        return array.reshape(entry.shape)

    def verify(self) -> None:
        """Check every tensor's CRC-32C (partitioned or undecodable entries are skipped)."""
        for entry in self.entries.values():
            if not entry.slices and entry.dtype in _DTYPE_IDS:
                self.read(entry.name)


def write_bundle(prefix: str | Path, tensors: Mapping[str, np.ndarray | bytes]) -> None:
    """Write a one-shard checkpoint: numeric arrays, or ``bytes`` for a scalar string tensor."""
    prefix = Path(prefix)
    records, offset = [], 0
    with shard_path(prefix, 0, 1).open("wb") as data:
        for name in sorted(tensors):
            value = tensors[name]
            if isinstance(value, bytes):
                length = protowire.varint(len(value))
                length_crc = struct.pack("<I", mask(crc32c(struct.pack("<I", len(value)))))
                payload = length + length_crc + value
                crc = crc32c(value, crc32c(length_crc, crc32c(struct.pack("<I", len(value)))))
                dtype_id, shape = _DTYPE_IDS["string"], ()
            else:
                array = np.require(value, np.dtype(value.dtype).newbyteorder("<"), "C")
                payload = array.reshape(-1).view(np.uint8)
                crc, dtype_id, shape = crc32c(payload), _DTYPE_IDS[array.dtype.name], array.shape
            data.write(payload)
            entry = _encode_entry(dtype_id, shape, offset, len(payload), mask(crc))
            records.append((name.encode(), entry))
            offset += len(payload)
    header = protowire.field(1, 1) + protowire.field(3, protowire.field(1, 1))
    write_table(prefix.with_name(prefix.name + ".index"), [(b"", header), *records])
