import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simclrv2.tfio import crc32c as crc_module
from simclrv2.tfio.crc32c import crc32c, mask, unmask

# CRC-32C check values published with the algorithm (RFC 3720, B.4; the "123456789" check value)
KNOWN = [
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


def bitwise_crc32c(data: bytes) -> int:
    """Independent reference: one bit at a time from the reflected polynomial, no tables."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize(("data", "expected"), KNOWN)
def test_published_check_values(data, expected):
    assert crc32c(data) == expected
    assert crc_module._extend_numpy(0, data) == expected


@pytest.mark.parametrize("size", [0, 1, 2047, 2048, 4096, 5000, 70_001])
def test_numpy_lanes_match_the_bitwise_reference(size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8)
    assert crc_module._extend_numpy(0, data) == bitwise_crc32c(data.tobytes())


def test_pieces_larger_than_the_lane_budget_chain_correctly(monkeypatch):
    monkeypatch.setattr(crc_module, "_MAX_LANES", 64)  # 4 KiB pieces instead of 4 MiB
    data = np.random.default_rng(1).integers(0, 256, 3 * 4096 + 2500, dtype=np.uint8)
    assert crc_module._extend_numpy(0, data) == bitwise_crc32c(data.tobytes())


@settings(max_examples=40, deadline=None)
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_extending_equals_checksumming_the_concatenation(first, second):
    assert crc_module._extend_numpy(crc_module._extend_numpy(0, first), second) == bitwise_crc32c(
        first + second
    )
    assert crc32c(second, crc32c(first)) == crc32c(first + second)


@given(st.integers(0, 0xFFFFFFFF))
def test_unmask_inverts_mask(value):
    assert unmask(mask(value)) == value


def test_optional_c_backend_agrees_with_numpy():
    if crc_module._FAST is None:
        pytest.skip("google-crc32c (extra fast-crc) is not installed")
    data = np.random.default_rng(2).integers(0, 256, 100_000, dtype=np.uint8)
    assert crc32c(data) == crc_module._extend_numpy(0, data)
