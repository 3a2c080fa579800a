"""CRC-32C (Castagnoli), the checksum of TensorFlow checkpoints, in numpy alone.

TensorBundle stores each tensor's CRC-32C *masked* (:func:`mask`), and so does every LevelDB block
of the ``.index``. A byte-at-a-time table loop in Python runs at a few MB/s, too slow for a 184 MB
shard, so long inputs are cut into many short lanes processed side by side, 4 bytes per numpy
step through two 16-bit tables (slicing-by-4), and the lane checksums are merged with the
"append n zero bytes" operator, which is linear over GF(2). With the optional extra ``fast-crc`` (``google-crc32c``) installed, its
C implementation is used instead.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

POLY = 0x82F63B78  # Castagnoli polynomial, bit-reflected
MASK_DELTA = 0xA282EAD8  # LevelDB / TensorFlow checksum mask
_U32 = 0xFFFFFFFF
_LANE_BYTES = 64  # bytes of each lane (a power of two): 16 numpy steps, whatever the length
_MAX_LANES = 65536  # lanes per piece: pieces of 4 MiB bound the working memory
_SHORT = 2048  # below this many bytes the plain byte loop is faster than numpy


def _tables() -> np.ndarray:
    """``T[k][b]``: register after feeding byte ``b`` then ``k`` zero bytes into a zero register."""
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(POLY), t >> 1).astype(np.uint32)
    tables = [t]
    for _ in range(3):
        prev = tables[-1]
        tables.append((prev >> 8) ^ t[prev & 0xFF])
    return np.stack(tables)


_T = _tables()
_T0 = _T[0].tolist()
_V = np.arange(1 << 16, dtype=np.uint32)
# a 4-byte word's low and high 16 bits -> their share of the register 4 bytes later
_LOW16 = _T[3][_V & 0xFF] ^ _T[2][_V >> 8]
_HIGH16 = _T[1][_V & 0xFF] ^ _T[0][_V >> 8]


def _apply(op: np.ndarray, state: np.ndarray) -> np.ndarray:
    """Apply a linear operator on 32-bit registers, stored as 4 byte-indexed tables, to ``state``."""
    return (
        op[0][state & 0xFF]
        ^ op[1][(state >> 8) & 0xFF]
        ^ op[2][(state >> 16) & 0xFF]
        ^ op[3][state >> 24]
    )


@functools.cache
def _zeros_operator(log2_count: int) -> np.ndarray:
    """The operator "feed 2**log2_count zero bytes" as 4 tables of 256 registers."""
    if log2_count == 0:
        b = np.arange(256, dtype=np.uint32)
        return np.stack([_T[0], b, b << 8, b << 16])  # one zero byte: T0[s & 0xff] ^ (s >> 8)
    half = _zeros_operator(log2_count - 1)
    return _apply(half, half)  # each table column pushed through the operator again


def _feed_zeros(register: int, count: int) -> int:
    """Register after ``count`` zero bytes, in log2(count) operator applications."""
    state = np.array([register], dtype=np.uint32)
    for bit in range(count.bit_length()):
        if count >> bit & 1:
            state = _apply(_zeros_operator(bit), state)
    return int(state[0])


def _bytewise(register: int, data: bytes | memoryview) -> int:
    """The reference loop, one table lookup per byte."""
    for byte in bytes(data):
        register = _T0[(register ^ byte) & 0xFF] ^ (register >> 8)
    return register


def _lanes(data: np.ndarray) -> int:
    """Register of a zero register fed ``data`` (uint8, a power-of-two count of whole lanes)."""
    lanes = len(data) // _LANE_BYTES
    words = data.view("<u4").reshape(lanes, -1).T.copy()  # (steps, lanes), contiguous rows
    state = np.zeros(lanes, dtype=np.uint32)
    for word in words:  # slicing-by-4, as two lookups of 16 bits
        x = state ^ word
        state = _LOW16[x & 0xFFFF] ^ _HIGH16[x >> 16]
    length_log2 = _LANE_BYTES.bit_length() - 1
    while len(state) > 1:  # merge neighbours: crc(a + b) = zeros(len b)(crc a) ^ crc(b)
        state = _apply(_zeros_operator(length_log2), state[0::2]) ^ state[1::2]
        length_log2 += 1
    return int(state[0])


def _raw_numpy(register: int, data: np.ndarray) -> int:
    """Register after feeding ``data``: zero-padded in front to whole lanes (leading zeros leave a
    zero register at zero), then ``register`` is carried across with the zeros operator."""
    count = len(data)
    lanes = 1 << max(0, -(-count // _LANE_BYTES) - 1).bit_length()
    padded = np.zeros(lanes * _LANE_BYTES, dtype=np.uint8)
    padded[len(padded) - count :] = data
    return _feed_zeros(register, count) ^ _lanes(padded)


def _extend_numpy(crc: int, data: bytes | memoryview | np.ndarray) -> int:
    array = np.frombuffer(data, dtype=np.uint8)
    register = crc ^ _U32
    piece = _MAX_LANES * _LANE_BYTES
    for start in range(0, len(array), piece):
        part = array[start : start + piece]
        if len(part) < _SHORT:
            register = _bytewise(register, part.tobytes())
        else:
            register = _raw_numpy(register, part)
    return register ^ _U32


def _fast_extend() -> Callable[[int, bytes], int] | None:
    """``google_crc32c.extend`` when its C build is installed (extra ``fast-crc``), else None."""
    try:
        import google_crc32c
    except ImportError:
        return None
    return google_crc32c.extend if google_crc32c.implementation == "c" else None


_FAST = _fast_extend()


def crc32c(data: bytes | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC-32C of ``data``, continuing from the CRC ``crc`` of the bytes before it (0 to start)."""
    if _FAST is not None:
        return _FAST(crc, data if isinstance(data, bytes) else bytes(data))  # needs bytes
    return _extend_numpy(crc, data)


def mask(crc: int) -> int:
    """The stored form of a CRC: rotated right by 15 bits, plus a constant (LevelDB's ``Mask``)."""
    return (((crc >> 15) | (crc << 17)) + MASK_DELTA) & _U32


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rotated = (masked - MASK_DELTA) & _U32
    return ((rotated >> 17) | (rotated << 15)) & _U32
