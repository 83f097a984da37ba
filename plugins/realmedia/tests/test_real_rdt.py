"""RDT packets: golden bytes, round trips, the struct fast path, and hostile input."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.wire.rdt import (
    RdtAck,
    RdtAsmAction,
    RdtBandwidthReport,
    RdtBufferInfo,
    RdtBwProbing,
    RdtCongestion,
    RdtData,
    RdtLatencyReport,
    RdtReport,
    RdtRttRequest,
    RdtRttResponse,
    RdtStreamEnd,
    RdtTransportInfoRequest,
    RdtTransportInfoResponse,
    RdtUnknownControl,
    StreamEndReason,
    build_asm_action,
    build_bandwidth_report,
    build_data_packet,
    build_latency_report,
    build_rdt,
    build_rdt_datagram,
    build_rtt_request,
    build_rtt_response,
    build_stream_end,
    parse_rdt,
    rdt_data_header,
    rdt_data_payload_offset,
    rewrite_rdt_data,
)

# --------------------------------------------------------------------------------------------
# golden bytes (PEERS.md item 6, rdt.c, packet-rdt.c)
# --------------------------------------------------------------------------------------------


def test_data_packet_as_peers_md_describes_it() -> None:
    key = build_data_packet(2, 0x1234, 0x01020304, b"RM", stream_id=0, keyframe=True)
    assert key == bytes([0x40 | 2 << 1, 0x12, 0x34, 0 << 1 | 0, 1, 2, 3, 4, 0, 0]) + b"RM"
    inter = build_data_packet(2, 7, 9, b"", stream_id=3, keyframe=False, total_reliable=0x0506)
    assert inter == bytes([0x44, 0, 7, 3 << 1 | 1, 0, 0, 0, 9, 5, 6])
    assert rdt_data_header(key) == (2, 0x1234, 0, True, 0x01020304)
    assert rdt_data_header(inter) == (2, 7, 3, False, 9)
    assert rdt_data_payload_offset(key) == 10


def test_control_packets_bytes() -> None:
    assert build_rtt_request() == b"\x00\xff\x03"
    assert build_rtt_response(1, 2) == b"\x00\xff\x04" + bytes([0, 0, 0, 1, 0, 0, 0, 2])
    assert build_latency_report(7) == b"\x00\xff\x08\x00\x00\x00\x07"
    assert build_latency_report(7, length_included=True) == b"\x80\xff\x08\x00\x09\x00\x00\x00\x07"
    assert build_bandwidth_report(1000, 64000, 3) == b"\x00\xff\x01\x03\xe8\x00\x00\xfa\x00\x03"
    # ASM action: the length sits after the reliable sequence number (gstrdtbuffer.c)
    assert build_asm_action(3, 9, b"zz", length_included=True) == b"\x8c\xff\x00\x00\x09\x00\x09zz"
    # stream end: need-reliable is bit 7 here, stream id bits 2-6, packet-sent bit 1
    assert build_stream_end(1, 8, 55, total_reliable=3) == (
        b"\x86\xff\x06\x00\x08\x00\x00\x00\x37\x00\x03"
    )
    assert build_stream_end(0, 0, 0, packet_sent=False) == b"\x00\xff\x06" + bytes(6)


def test_datagram_with_status_packets_before_data() -> None:
    packets = [
        RdtLatencyReport(99, length_included=True),
        RdtRttRequest(),
        RdtStreamEnd(0, 8, 55, total_reliable=3),
        RdtData(2, 7, 0, 55, b"payload", length_included=True),
    ]
    dgram = build_rdt_datagram(packets)
    assert parse_rdt(dgram) == packets
    # ffmpeg's ff_rdt_parse_header skips length-included status packets before the data
    assert rdt_data_header(dgram[-19:]) == (2, 7, 0, True, 55)


def test_datagram_rules() -> None:
    data = RdtData(0, 1, 0, 0, b"x", length_included=True)
    with pytest.raises(LocalProtocolError, match="last"):
        build_rdt_datagram([data, RdtRttRequest()])
    with pytest.raises(LocalProtocolError, match="cannot be followed"):
        build_rdt_datagram([RdtAck(b"x"), RdtRttRequest()])
    with pytest.raises(LocalProtocolError, match="cannot be followed"):
        build_rdt_datagram([RdtStreamEnd(0, 0, 0, reason=StreamEndReason(1)), RdtRttRequest()])
    with pytest.raises(LocalProtocolError):
        build_rdt_datagram([])
    with pytest.raises(LocalProtocolError, match="0xFF00"):
        build_data_packet(0, 0xFF00, 0, b"")
    with pytest.raises(LocalProtocolError):
        build_rdt(RdtUnknownControl(0xFF05))
    with pytest.raises(LocalProtocolError):
        build_rdt(RdtTransportInfoResponse(response_time_ms=5))
    with pytest.raises(LocalProtocolError):
        build_rdt(RdtBandwidthReport(1, 1 << 32, 0))


def test_rewrite_patches_only_header_bytes() -> None:
    original = build_data_packet(1, 5, 1000, b"payload", keyframe=False)
    patched = rewrite_rdt_data(original, set_id=3, seq=9)
    assert patched[3:] == original[3:]
    assert rdt_data_header(patched) == (3, 9, 0, False, 1000)
    wide = rewrite_rdt_data(original, set_id=40)
    assert parse_rdt(wide) == [RdtData(40, 5, 1, 1000, b"payload")]
    assert rewrite_rdt_data(wide, set_id=2) == rewrite_rdt_data(original, set_id=2)
    with pytest.raises(LocalProtocolError):
        rewrite_rdt_data(original, seq=0xFF00)
    with pytest.raises(RealProtocolError):
        rewrite_rdt_data(build_rtt_request())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x40\x00",
        b"\x80\x00\x01\x00",  # ends inside the length field
        b"\xc0\x00\x01\x00\x05" + bytes(5),  # length shorter than the header
        b"\xc0\x00\x01\x00\x40" + bytes(5),  # length beyond the datagram
        b"\x00\xff\x04\x00",  # RTT response cut short
        b"\x00\xff\x0a\x01\x00",  # transport info response cut inside its count
        b"\x00\xff\x03\x00",  # one byte after a fixed-size packet
        b"\x00\xff\x01\x00\x00",  # bandwidth report cut short
    ],
)
def test_malformed_datagrams(data: bytes) -> None:
    with pytest.raises(RealProtocolError):
        parse_rdt(data)


# --------------------------------------------------------------------------------------------
# hypothesis: every packet type round trips
# --------------------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
i32 = st.integers(-(2**31), 2**31 - 1)
blob = st.binary(max_size=30)
bits = st.integers

data_packets = st.builds(
    RdtData,
    set_id=u16,
    seq=st.integers(0, 0xFEFF),
    asm_rule=u16,
    timestamp=u32,
    payload=blob,
    total_reliable=st.none() | u16,
    is_reliable=st.booleans(),
    back_to_back=st.booleans(),
    slow_data=st.booleans(),
    length_included=st.booleans(),
)
reasons = st.none() | st.builds(StreamEndReason, u32, blob, u8, u16)
delimited_controls = st.one_of(
    st.builds(RdtAsmAction, u16, u16, blob, st.just(True), bits(0, 3)),
    st.builds(RdtBandwidthReport, u16, u32, u8, st.just(True), bits(0, 127)),
    st.builds(RdtAck, blob, st.booleans(), st.just(True), bits(0, 63)),
    st.builds(RdtRttRequest, u8),
    st.builds(RdtRttResponse, u32, u32, u8),
    st.builds(RdtCongestion, i32, i32, u8),
    st.builds(RdtStreamEnd, u16, u16, u32, st.none() | u16, st.booleans(), st.none()),
    st.builds(RdtReport, blob, st.just(True), bits(0, 127)),
    st.builds(RdtLatencyReport, u32, st.just(True), bits(0, 127)),
    st.builds(RdtTransportInfoRequest, st.none() | u32, st.booleans(), bits(0, 63)),
    st.builds(RdtBwProbing, u8, u32, st.just(True), bits(0, 127)),
    st.tuples(st.none() | u32, u32, st.none() | st.lists(st.builds(RdtBufferInfo, u16, u32, u32,
              u32), max_size=3).map(tuple), bits(0, 31)).map(
        lambda t: RdtTransportInfoResponse(t[0], None if t[0] is None else t[1], t[2], t[3])
    ),
)  # fmt: skip
last_only = st.one_of(
    data_packets,
    st.builds(RdtAsmAction, u16, u16, blob, st.just(False), bits(0, 3)),
    st.builds(RdtBandwidthReport, u16, u32, u8, st.just(False), bits(0, 127)),
    st.builds(RdtAck, blob, st.booleans(), st.just(False), bits(0, 63)),
    st.builds(RdtStreamEnd, u16, u16, u32, st.none() | u16, st.booleans(), reasons),
    st.builds(RdtReport, blob, st.just(False), bits(0, 127)),
    st.builds(RdtLatencyReport, u32, st.just(False), bits(0, 127)),
    st.builds(RdtBwProbing, u8, u32, st.just(False), bits(0, 127)),
    st.builds(RdtUnknownControl, st.integers(0xFF0C, 0xFFFF), u8, blob),
)
any_packet = st.one_of(delimited_controls, last_only)


@given(any_packet)
def test_every_packet_round_trips(packet) -> None:
    assert parse_rdt(build_rdt(packet)) == [packet]


@given(st.lists(delimited_controls, max_size=5), any_packet)
def test_datagrams_round_trip(first, last) -> None:
    packets = [*first, last]
    assert parse_rdt(build_rdt_datagram(packets)) == packets


@given(data_packets)
@example(RdtData(31, 0, 63, 0, b"", total_reliable=None))
@example(RdtData(30, 0xFEFF, 62, 0xFFFF_FFFF, b"x", length_included=True))
def test_fast_path_agrees_with_declaration(packet: RdtData) -> None:
    data = build_rdt(packet)
    assert rdt_data_header(data) == (
        packet.set_id, packet.seq, packet.stream_id, packet.keyframe, packet.timestamp
    )  # fmt: skip
    assert data[rdt_data_payload_offset(data) :] == packet.payload


@given(st.binary(min_size=1, max_size=40))
@example(b"\x7e\x00\x00\x3f\x00\x00\x00\x00\x00")
def test_fast_path_agrees_on_any_bytes(data: bytes) -> None:
    try:
        fast = rdt_data_header(data)
    except RealProtocolError:
        fast = None
    try:
        parsed = parse_rdt(data)
    except RealProtocolError:
        parsed = None
    if fast is not None:
        assert parsed is not None and len(parsed) == 1 and isinstance(parsed[0], RdtData)
        p = parsed[0]
        assert fast == (p.set_id, p.seq, p.stream_id, p.keyframe, p.timestamp)
    elif parsed is not None and len(parsed) == 1 and isinstance(parsed[0], RdtData):
        pytest.fail(f"fast path refused a data packet the declaration accepts: {parsed}")


@given(data_packets, st.none() | u16, st.none() | st.integers(0, 0xFEFF))
def test_rewrite_equals_rebuild(packet: RdtData, set_id, seq) -> None:
    data = build_rdt(packet)
    expected = dataclasses.replace(
        packet,
        set_id=packet.set_id if set_id is None else set_id,
        seq=packet.seq if seq is None else seq,
    )
    assert parse_rdt(rewrite_rdt_data(data, set_id=set_id, seq=seq)) == [expected]


# --------------------------------------------------------------------------------------------
# hostile input
# --------------------------------------------------------------------------------------------


@given(st.binary(max_size=80))
@example(b"\x80\xff\x00\x00\x00\x00\x00")
@example(b"\x01\xff\x06" + bytes(6))
def test_random_datagrams_raise_only_our_error(data: bytes) -> None:
    for fn in (parse_rdt, rdt_data_header, rdt_data_payload_offset, rewrite_rdt_data):
        with contextlib.suppress(RealProtocolError):
            fn(data)
    with contextlib.suppress(RealProtocolError):
        rewrite_rdt_data(data, set_id=40, seq=1)


@given(st.lists(any_packet, min_size=1, max_size=3), st.data())
def test_truncated_and_flipped_datagrams(packets, draw) -> None:
    data = bytearray(b"".join(build_rdt(p) for p in packets))
    cut = draw.draw(st.integers(0, len(data)))
    at = draw.draw(st.integers(0, len(data) - 1))
    data[at] ^= draw.draw(st.integers(1, 255))
    for candidate in (bytes(data[:cut]), bytes(data)):
        with contextlib.suppress(RealProtocolError):
            parse_rdt(candidate)
