"""RTP headers and RTCP reports: golden bytes, round trips, construct vs struct agreement."""

from __future__ import annotations

import contextlib
import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache import rtp
from mediacache.errors import LocalProtocolError, RemoteProtocolError
from mediacache.rtp import (
    Bye,
    ReceiverReport,
    ReportBlock,
    RtpHeader,
    SenderReport,
)

# gst-rtsp-server 1.22 compound RTCP packets (SR + SDES, then SR + SDES + BYE at the end).
GST_SR_SDES = bytes.fromhex(
    "80c800065d973bf2eeb0e57101e764272f9675cf000000a900012a7e"
    "81ca000c5d973bf2011b7573657235383135373231323540686f73742d666561343864326406094753"
    "747265616d657200000000"
)
GST_SR_SDES_BYE = bytes.fromhex(
    "80c800065d973bf2eeb0e57354d141a62f99a6cb000001940002c730"
    "81ca000c5d973bf2011b7573657235383135373231323540686f73742d666561343864326406094753"
    "747265616d65720000000081cb00015d973bf2"
)
# GStreamer rtspsrc receiver report (RR + SDES) sent on interleaved channel 1.
GST_RR_SDES = bytes.fromhex(
    "81c90007a65d68bf5d973bf200ffffff000062ba0000000fe57101e7000129da"
    "81ca000ca65d68bf011c757365723232323631353234383640686f73742d3737306437633365"
    "06094753747265616d6572000000"
)
# First RTP packet of the PCMU track in data/ffmpeg_tcp.s2c (header + 4 payload bytes).
PCMU_RTP = bytes.fromhex("8080177347b3ac7f53efe68f9e8f8986")


def test_rtp_golden() -> None:
    h = rtp.parse_rtp_header(PCMU_RTP)
    assert h == RtpHeader(2, False, False, 0, True, 0, 6003, 1202957439, 1408231055)
    assert rtp.build_rtp_header(h) == PCMU_RTP[:12]
    assert (rtp.rtp_seq(PCMU_RTP), rtp.rtp_timestamp(PCMU_RTP), rtp.rtp_ssrc(PCMU_RTP)) == (
        6003,
        1202957439,
        1408231055,
    )
    assert rtp.rtp_payload_offset(PCMU_RTP) == 12
    assert not rtp.is_rtcp(PCMU_RTP)


def test_rtp_csrcs_and_extension() -> None:
    h = RtpHeader(2, True, True, 2, False, 96, 1, 2, 3, (10, 11))
    data = rtp.build_rtp_header(h) + b"\xbe\xde\x00\x01" + b"xxxx" + b"payload"
    assert rtp.parse_rtp_header(data) == h
    assert rtp.rtp_payload_offset(data) == 12 + 8 + 8
    assert data[rtp.rtp_payload_offset(data) :] == b"payload"
    with pytest.raises(RemoteProtocolError):
        rtp.rtp_payload_offset(rtp.build_rtp_header(h) + b"\xbe\xde")
    with pytest.raises(RemoteProtocolError):
        rtp.rtp_payload_offset(rtp.build_rtp_header(h) + b"\xbe\xde\x00\x09")


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x80" * 11, b"\x40" + bytes(11), b"\xc0" + bytes(11), b"\x82" + bytes(11) + b"\x00"],
)
def test_rtp_header_errors(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        rtp.parse_rtp_header(bad)


def test_fast_accessors_refuse_short_packets() -> None:
    for fn in (rtp.rtp_seq, rtp.rtp_timestamp, rtp.rtp_ssrc, rtp.rtp_payload_offset):
        with pytest.raises(RemoteProtocolError):
            fn(b"\x80\x60\x00")
    with pytest.raises(RemoteProtocolError):
        rtp.rewrite_rtp(b"\x80" * 11, 1, 2, 3)


def test_build_rtp_header_refuses_inconsistent_or_out_of_range() -> None:
    with pytest.raises(LocalProtocolError):
        rtp.build_rtp_header(RtpHeader(2, False, False, 1, False, 96, 1, 2, 3))
    with pytest.raises(LocalProtocolError):
        rtp.build_rtp_header(RtpHeader(2, False, False, 0, False, 128, 1, 2, 3))
    with pytest.raises(LocalProtocolError):
        rtp.build_rtp_header(RtpHeader(2, False, False, 0, False, 96, 65536, 2, 3))


def test_is_rtcp() -> None:
    assert rtp.is_rtcp(GST_SR_SDES) and rtp.is_rtcp(GST_RR_SDES)
    assert rtp.is_rtcp(b"\x81\xcd")  # AVPF generic NACK (205)
    assert not rtp.is_rtcp(b"\x80\x60") and not rtp.is_rtcp(b"\x80")


rtp_headers = st.builds(
    lambda flags, cs, pt, seq, ts, ssrc: RtpHeader(
        2, flags[0], flags[1], len(cs), flags[2], pt, seq, ts, ssrc, tuple(cs)
    ),
    st.tuples(st.booleans(), st.booleans(), st.booleans()),
    st.lists(st.integers(0, 2**32 - 1), max_size=15),
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.integers(0, 0xFFFFFFFF),
)


@given(rtp_headers, st.binary(max_size=50))
def test_rtp_round_trip_and_fast_path_agreement(h: RtpHeader, payload: bytes) -> None:
    data = rtp.build_rtp_header(h) + payload
    assert rtp.parse_rtp_header(data) == h
    assert rtp.rtp_seq(data) == h.sequence
    assert rtp.rtp_timestamp(data) == h.timestamp
    assert rtp.rtp_ssrc(data) == h.ssrc
    assert rtp.is_rtcp(data) == (h.marker and 64 <= h.payload_type <= 95)


@given(
    rtp_headers,
    st.binary(max_size=50),
    st.integers(-(2**40), 2**40),
    st.integers(-(2**40), 2**40),
    st.integers(0, 2**32 - 1),
)
def test_rewrite_rtp_only_changes_seq_timestamp_ssrc(
    h: RtpHeader, payload: bytes, seq: int, ts: int, ssrc: int
) -> None:
    data = rtp.build_rtp_header(h) + payload
    out = rtp.rewrite_rtp(data, seq, ts, ssrc)
    assert isinstance(out, bytes) and len(out) == len(data)
    expected = dataclasses.replace(h, sequence=seq % 2**16, timestamp=ts % 2**32, ssrc=ssrc)
    assert rtp.parse_rtp_header(out) == expected
    assert out[:2] == data[:2] and out[12:] == data[12:]


@given(st.binary(min_size=12, max_size=80))
def test_construct_and_struct_agree_on_any_bytes(data: bytes) -> None:
    try:
        h = rtp.parse_rtp_header(data)
    except RemoteProtocolError:
        assert data[0] >> 6 != 2 or len(data) < 12 + 4 * (data[0] & 0x0F)
        return
    assert (h.sequence, h.timestamp, h.ssrc) == (
        rtp.rtp_seq(data),
        rtp.rtp_timestamp(data),
        rtp.rtp_ssrc(data),
    )
    assert h.csrc_count == data[0] & 0x0F and h.marker == bool(data[1] & 0x80)
    assert rtp.is_rtcp(data) == (192 <= data[1] <= 223)


# -- RTCP --------------------------------------------------------------------------------------


def test_split_and_parse_gstreamer_sender_reports() -> None:
    sr_bytes, sdes = rtp.split_rtcp(GST_SR_SDES)
    assert (len(sr_bytes), sdes[1], len(sdes)) == (28, rtp.RTCP_PT_SDES, 52)
    sr = rtp.parse_sender_report(sr_bytes)
    assert sr == SenderReport(1570192370, 4004570481, 31941671, 798389711, 169, 76414)
    assert rtp.build_sender_report(sr) == sr_bytes
    assert rtp.parse_sender_report(GST_SR_SDES) == sr  # the first packet of a compound

    *_, bye_bytes = rtp.split_rtcp(GST_SR_SDES_BYE)
    assert rtp.rtcp_packet_type(bye_bytes) == rtp.RTCP_PT_BYE
    assert rtp.parse_bye(bye_bytes) == Bye((1570192370,))
    assert rtp.build_bye(Bye((1570192370,))) == bye_bytes


def test_gstreamer_receiver_report() -> None:
    rr_bytes, _ = rtp.split_rtcp(GST_RR_SDES)
    rr = rtp.parse_receiver_report(rr_bytes)
    assert rr == ReceiverReport(
        2791139519, (ReportBlock(1570192370, 0, -1, 25274, 15, 3849388519, 76250),)
    )
    assert rtp.build_receiver_report(rr) == rr_bytes


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x80\xc8\x00",
        b"\x40\xc8\x00\x00",  # version 1
        b"\x80\xc8\x00\x06" + bytes(20),  # says 28 bytes, has 24
        GST_SR_SDES + b"\x80",  # trailing junk
    ],
)
def test_split_rtcp_errors(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        rtp.split_rtcp(bad)


@pytest.mark.parametrize(
    ("fn", "bad"),
    [
        (rtp.parse_sender_report, GST_RR_SDES),  # wrong type
        (rtp.parse_sender_report, b"\x80\xc8\x00\x01\x00\x00\x00\x01"),  # too short for an SR
        (rtp.parse_sender_report, b"\x81\xc8\x00\x06" + bytes(24)),  # RC=1 but no block
        (rtp.parse_receiver_report, b"\x81\xc9\x00\x01" + bytes(4)),
        (rtp.parse_receiver_report, b"\x01\xc9\x00\x01" + bytes(4)),
        (rtp.parse_bye, b"\x82\xcb\x00\x01" + bytes(4)),  # SC=2, room for 1
        (rtp.parse_bye, b"\x81\xcb\x00\x02\x00\x00\x00\x01\x09abc"),  # reason overruns
        (rtp.parse_bye, b"\x81"),
    ],
)
def test_rtcp_parse_errors(fn: object, bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        fn(bad)  # type: ignore[operator]


def test_rtcp_build_errors() -> None:
    block = ReportBlock(1, 0, 0, 0, 0, 0, 0)
    with pytest.raises(LocalProtocolError):
        rtp.build_receiver_report(ReceiverReport(1, (block,) * 32))
    with pytest.raises(LocalProtocolError):
        rtp.build_sender_report(SenderReport(2**32, 0, 0, 0, 0, 0))
    with pytest.raises(LocalProtocolError):
        rtp.build_bye(Bye((1,), "x" * 256))
    with pytest.raises(LocalProtocolError):
        rtp.build_bye(Bye(tuple(range(32))))
    with pytest.raises(LocalProtocolError):
        rtp.build_receiver_report(ReceiverReport(1, (ReportBlock(1, 0, 2**23, 0, 0, 0, 0),)))


u32 = st.integers(0, 2**32 - 1)
report_blocks = st.builds(
    ReportBlock, u32, st.integers(0, 255), st.integers(-(2**23), 2**23 - 1), u32, u32, u32, u32
)
block_lists = st.lists(report_blocks, max_size=31).map(tuple)


@given(st.builds(SenderReport, u32, u32, u32, u32, u32, u32, block_lists))
def test_sender_report_round_trip(sr: SenderReport) -> None:
    data = rtp.build_sender_report(sr)
    assert len(data) == 28 + 24 * len(sr.reports)
    assert rtp.split_rtcp(data) == [data]
    assert rtp.parse_sender_report(data) == sr


@given(st.builds(ReceiverReport, u32, block_lists))
def test_receiver_report_round_trip(rr: ReceiverReport) -> None:
    data = rtp.build_receiver_report(rr)
    assert len(data) == 8 + 24 * len(rr.reports)
    assert rtp.split_rtcp(data) == [data]
    assert rtp.parse_receiver_report(data) == rr


@given(st.builds(Bye, st.lists(u32, max_size=31).map(tuple), st.none() | st.text(max_size=60)))
def test_bye_round_trip(bye: Bye) -> None:
    if bye.reason is not None and len(bye.reason.encode()) > 255:
        return
    data = rtp.build_bye(bye)
    assert len(data) % 4 == 0
    assert rtp.split_rtcp(data) == [data]
    assert rtp.parse_bye(data) == bye


@given(st.lists(st.sampled_from([GST_SR_SDES, GST_RR_SDES, GST_SR_SDES_BYE]), min_size=1))
def test_split_rtcp_concatenation(packets: list[bytes]) -> None:
    parts = rtp.split_rtcp(b"".join(packets))
    assert b"".join(parts) == b"".join(packets)
    assert all(p[0] >> 6 == 2 for p in parts)


@given(st.binary(max_size=100))
def test_rtcp_garbage_raises_only_protocol_errors(data: bytes) -> None:
    for fn in (rtp.split_rtcp, rtp.parse_sender_report, rtp.parse_receiver_report, rtp.parse_bye):
        with contextlib.suppress(RemoteProtocolError):
            fn(data)


def test_restamp_rtcp_moves_every_part_of_a_renumbered_stream() -> None:
    """GStreamer's SR + SDES + BYE, renumbered: every SSRC of the old stream and the SR's RTP
    timestamp move; the NTP time, counts and lengths stay."""
    old = 0x5D973BF2
    out = rtp.restamp_rtcp(GST_SR_SDES_BYE, old, 0x11223344, 1000)
    parts = rtp.split_rtcp(out)
    assert len(out) == len(GST_SR_SDES_BYE) and len(parts) == 3
    sr, before = rtp.parse_sender_report(parts[0]), rtp.parse_sender_report(GST_SR_SDES_BYE)
    assert sr == dataclasses.replace(
        before, ssrc=0x11223344, rtp_timestamp=(before.rtp_timestamp + 1000) & 0xFFFFFFFF
    )
    assert rtp.parse_bye(parts[2]).ssrcs == (0x11223344,)
    assert rtp.restamp_rtcp(GST_SR_SDES_BYE, 7, 7, 0) == GST_SR_SDES_BYE  # another stream's


@given(st.binary(max_size=200), st.integers(0, 2**32 - 1), st.integers(-(2**32), 2**32))
def test_restamp_rtcp_never_raises(data: bytes, ssrc: int, delta: int) -> None:
    old = int.from_bytes(data[4:8], "big") if len(data) >= 8 else 0
    out = rtp.restamp_rtcp(data, old, ssrc, delta)
    assert len(out) == len(data) and out[:4] == data[:4]
