"""Interleaved framing: the construct declaration and the struct hot path agree."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError, RemoteProtocolError
from mediacache.rtsp import (
    FRAME_HEADER,
    INTERLEAVED_HEADER,
    InterleavedFrame,
    RtspReader,
    build_interleaved,
    parse_interleaved_header,
)


def test_golden() -> None:
    assert build_interleaved(1, b"\x80\xc8") == b"$\x01\x00\x02\x80\xc8"
    assert parse_interleaved_header(b"$\x03\x01\x00") == (3, 256)


@given(st.integers(0, 255), st.binary(max_size=2000))
def test_struct_and_construct_agree(channel: int, payload: bytes) -> None:
    fast = build_interleaved(channel, payload)
    declared = INTERLEAVED_HEADER.build({"channel": channel, "length": len(payload)}) + payload
    assert fast == declared
    assert parse_interleaved_header(fast) == (channel, len(payload))
    assert FRAME_HEADER.unpack_from(fast) == (0x24, channel, len(payload))
    reader = RtspReader()
    reader.receive_data(fast)
    assert reader.next_event() == InterleavedFrame(channel, payload)


@given(st.binary(min_size=4, max_size=4))
def test_parsers_agree_on_any_four_bytes(header: bytes) -> None:
    magic, channel, length = FRAME_HEADER.unpack(header)
    if magic == 0x24:
        assert parse_interleaved_header(header) == (channel, length)
    else:
        with pytest.raises(RemoteProtocolError):
            parse_interleaved_header(header)


def test_errors() -> None:
    with pytest.raises(RemoteProtocolError):
        parse_interleaved_header(b"$\x00")
    with pytest.raises(RemoteProtocolError):
        parse_interleaved_header(b"#\x00\x00\x00")
    with pytest.raises(LocalProtocolError):
        build_interleaved(256, b"")
    with pytest.raises(LocalProtocolError):
        build_interleaved(-1, b"")
    with pytest.raises(LocalProtocolError):
        build_interleaved(0, bytes(65536))
    assert len(build_interleaved(0, bytes(65535))) == 65539
