"""The protocol-buffer wire format, just enough to read and write TensorFlow's checkpoint records.

A message is a sequence of (field number, wire type, value); :func:`parse` returns every field's
values in order, leaving their meaning to the caller, who knows the message's schema. Varints,
64- and 32-bit fixed values and length-delimited bytes (strings, packed arrays, sub-messages) are
supported; the deprecated group wire types are not, and raise :class:`WireError`.
"""

from __future__ import annotations

import struct
from collections import defaultdict

VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not a well-formed protocol-buffer message (or a varint)."""


def read_varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode the unsigned varint at ``pos``; return (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise WireError("varint runs past the end of the buffer")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift >= 70:
            raise WireError("varint longer than 10 bytes")


def parse(buf: bytes | memoryview) -> dict[int, list[int | bytes]]:
    """Field number -> its values in order: ints for varint and fixed fields, bytes otherwise."""
    fields: dict[int, list[int | bytes]] = defaultdict(list)
    pos = 0
    while pos < len(buf):
        key, pos = read_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == VARINT:
            value, pos = read_varint(buf, pos)
        elif wire_type in (FIXED64, FIXED32):
            width = 8 if wire_type == FIXED64 else 4
            if pos + width > len(buf):
                raise WireError(f"field {number} runs past the end of the buffer")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire_type == BYTES:
            length, pos = read_varint(buf, pos)
            if pos + length > len(buf):
                raise WireError(f"field {number} runs past the end of the buffer")
            value = bytes(buf[pos : pos + length])
            pos += length
        else:
            raise WireError(f"field {number} has unsupported wire type {wire_type}")
        fields[number].append(value)
    return fields


def signed64(value: int) -> int:
    """An int64 field's value: varints carry negative numbers as 64-bit two's complement."""
    return value - (1 << 64) if value >= 1 << 63 else value


def varint(value: int) -> bytes:
    """Encode a non-negative integer (or an int64, as two's complement) as a varint."""
    value &= (1 << 64) - 1
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field(number: int, value: int | bytes, wire_type: int | None = None) -> bytes:
    """One encoded field: ints as varints (or ``FIXED32``/``FIXED64``), bytes length-delimited."""
    if isinstance(value, bytes):
        return varint(number << 3 | BYTES) + varint(len(value)) + value
    wire_type = VARINT if wire_type is None else wire_type
    if wire_type == VARINT:
        return varint(number << 3 | VARINT) + varint(value)
    width = 4 if wire_type == FIXED32 else 8
    return varint(number << 3 | wire_type) + struct.pack("<I" if width == 4 else "<Q", value)
