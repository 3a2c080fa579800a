import pytest
from hypothesis import given
from hypothesis import strategies as st

from simclrv2.tfio import protowire


@given(st.integers(-(2**63), 2**64 - 1))
def test_varint_round_trip_with_int64_as_twos_complement(value):
    encoded = protowire.varint(value)
    decoded, end = protowire.read_varint(encoded + b"tail", 0)
    assert end == len(encoded) <= 10
    assert decoded == value % 2**64
    if value < 2**63:
        assert protowire.signed64(decoded) == value


def test_known_encodings():
    assert protowire.varint(300) == b"\xac\x02"  # the protobuf documentation's example
    assert protowire.field(1, 150) == b"\x08\x96\x01"
    assert protowire.field(2, b"testing") == b"\x12\x07testing"


@given(
    st.lists(
        st.tuples(
            st.integers(1, 2000),
            st.one_of(st.integers(0, 2**64 - 1), st.binary(max_size=40)),
            st.sampled_from([None, protowire.FIXED32, protowire.FIXED64]),
        ),
        max_size=12,
    )
)
def test_parse_returns_every_field_in_order(fields):
    message, expected = b"", {}
    for number, value, wire_type in fields:
        if isinstance(value, int) and wire_type == protowire.FIXED32:
            value %= 2**32
        message += protowire.field(number, value, None if isinstance(value, bytes) else wire_type)
        expected.setdefault(number, []).append(value)
    assert dict(protowire.parse(message)) == expected


@pytest.mark.parametrize(
    "bad",
    [b"\x80", b"\x12\x05abc", b"\x0d\x01\x02", b"\x0b", b"\xff" * 11],
)
def test_malformed_messages_raise_wire_error(bad):
    with pytest.raises(protowire.WireError):
        protowire.parse(bad)
