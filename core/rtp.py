"""RTP and RTCP wire formats (RFC 3550): construct declarations plus a struct-based hot path.

The declarations (``RTP_HEADER``, ``SENDER_REPORT``...) are the readable definition and serve
RTCP, which arrives a few times per second. RTP packets arrive thousands of times per second
and the proxy only needs sequence, timestamp and SSRC, so ``rtp_seq``/``rtp_timestamp``/
``rtp_ssrc``/``rewrite_rtp`` read and patch those bytes with precomputed ``struct.Struct``s and
forward the rest untouched. Tests prove the two paths agree.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from construct import (
    Array,
    BitsInteger,
    BitStruct,
    Const,
    ConstructError,
    Default,
    Flag,
    GreedyBytes,
    If,
    Int8ub,
    Int16ub,
    Int24sb,
    Int32ub,
    Padding,
    Prefixed,
    Rebuild,
    Struct,
    len_,
    this,
)

from mediacache.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "BYE",
    "RECEIVER_REPORT",
    "REPORT_BLOCK",
    "RTCP_HEADER",
    "RTCP_PT_APP",
    "RTCP_PT_BYE",
    "RTCP_PT_RR",
    "RTCP_PT_SDES",
    "RTCP_PT_SR",
    "RTP_HEADER",
    "SENDER_REPORT",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtpHeader",
    "SenderReport",
    "build_bye",
    "build_receiver_report",
    "build_rtp_header",
    "build_sender_report",
    "is_rtcp",
    "parse_bye",
    "parse_receiver_report",
    "parse_rtp_header",
    "parse_sender_report",
    "rewrite_rtp",
    "rtcp_packet_type",
    "rtp_payload_offset",
    "rtp_seq",
    "rtp_ssrc",
    "rtp_timestamp",
    "split_rtcp",
]

RTCP_PT_SR = 200
RTCP_PT_RR = 201
RTCP_PT_SDES = 202
RTCP_PT_BYE = 203
RTCP_PT_APP = 204

# -- declarations --------------------------------------------------------------------------------

RTP_HEADER = Struct(
    "flags"
    / BitStruct(
        "version" / Default(BitsInteger(2), 2),
        "padding" / Default(Flag, False),
        "extension" / Default(Flag, False),
        "csrc_count" / Rebuild(BitsInteger(4), len_(this._.csrcs)),
        "marker" / Default(Flag, False),
        "payload_type" / BitsInteger(7),
    ),
    "sequence" / Int16ub,
    "timestamp" / Int32ub,
    "ssrc" / Int32ub,
    "csrcs" / Array(this.flags.csrc_count, Int32ub),
)

RTCP_HEADER = Struct(
    "flags" / BitStruct("version" / BitsInteger(2), "padding" / Flag, "count" / BitsInteger(5)),
    "packet_type" / Int8ub,
    "length" / Int16ub,  # in 32-bit words, minus one
)

REPORT_BLOCK = Struct(
    "ssrc" / Int32ub,
    "fraction_lost" / Int8ub,
    "cumulative_lost" / Int24sb,  # signed: duplicates can make it negative
    "highest_seq" / Int32ub,
    "jitter" / Int32ub,
    "lsr" / Int32ub,
    "dlsr" / Int32ub,
)


def _rtcp_flags(counted: str) -> BitStruct:
    return BitStruct(
        "version" / Const(2, BitsInteger(2)),
        "padding" / Default(Flag, False),
        "count" / Rebuild(BitsInteger(5), len_(this._[counted])),
    )


SENDER_REPORT = Struct(
    "flags" / _rtcp_flags("reports"),
    "packet_type" / Const(RTCP_PT_SR, Int8ub),
    "length" / Rebuild(Int16ub, 6 + 6 * len_(this.reports)),
    "ssrc" / Int32ub,
    "ntp_sec" / Int32ub,
    "ntp_frac" / Int32ub,
    "rtp_timestamp" / Int32ub,
    "packet_count" / Int32ub,
    "octet_count" / Int32ub,
    "reports" / Array(this.flags.count, REPORT_BLOCK),
)

RECEIVER_REPORT = Struct(
    "flags" / _rtcp_flags("reports"),
    "packet_type" / Const(RTCP_PT_RR, Int8ub),
    "length" / Rebuild(Int16ub, 1 + 6 * len_(this.reports)),
    "ssrc" / Int32ub,
    "reports" / Array(this.flags.count, REPORT_BLOCK),
)


def _bye_words(ctx: Any) -> int:
    reason = ctx.reason
    return len(ctx.ssrcs) + (0 if reason is None else (len(reason) + 4) // 4)


BYE = Struct(
    "flags" / _rtcp_flags("ssrcs"),
    "packet_type" / Const(RTCP_PT_BYE, Int8ub),
    "length" / Rebuild(Int16ub, _bye_words),
    "ssrcs" / Array(this.flags.count, Int32ub),
    "reason" / If(this.length > this.flags.count, Prefixed(Int8ub, GreedyBytes)),
    "pad" / Padding(lambda ctx: 0 if ctx.reason is None else -(1 + len(ctx.reason)) % 4),
)

# -- RTP -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RtpHeader:
    """The fixed RTP header. ``csrcs`` (an addition) must hold ``csrc_count`` entries."""

    version: int
    padding: bool
    extension: bool
    csrc_count: int
    marker: bool
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    csrcs: tuple[int, ...] = ()


def parse_rtp_header(data: bytes) -> RtpHeader:
    """Parse the fixed header and CSRC list with the construct declaration."""
    if len(data) < 12:
        raise RemoteProtocolError(f"RTP packet of {len(data)} bytes is shorter than its header")
    try:
        parsed = RTP_HEADER.parse(data)
    except ConstructError as exc:
        raise RemoteProtocolError(f"bad RTP header: {exc}") from None
    flags = parsed.flags
    if flags.version != 2:
        raise RemoteProtocolError(f"RTP version {flags.version}, expected 2")
    return RtpHeader(
        flags.version,
        flags.padding,
        flags.extension,
        flags.csrc_count,
        flags.marker,
        flags.payload_type,
        parsed.sequence,
        parsed.timestamp,
        parsed.ssrc,
        tuple(parsed.csrcs),
    )


def build_rtp_header(h: RtpHeader) -> bytes:
    if h.csrc_count != len(h.csrcs):
        raise LocalProtocolError(f"csrc_count {h.csrc_count} but {len(h.csrcs)} CSRCs")
    try:
        return RTP_HEADER.build(
            {
                "flags": {
                    "version": h.version,
                    "padding": h.padding,
                    "extension": h.extension,
                    "marker": h.marker,
                    "payload_type": h.payload_type,
                },
                "sequence": h.sequence,
                "timestamp": h.timestamp,
                "ssrc": h.ssrc,
                "csrcs": list(h.csrcs),
            }
        )
    except ConstructError as exc:
        raise LocalProtocolError(f"cannot build RTP header {h!r}: {exc}") from None


_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_SEQ_TS_SSRC = struct.Struct(">HII")
_unpack_u16 = _U16.unpack_from
_unpack_u32 = _U32.unpack_from
_pack_seq_ts_ssrc_into = _SEQ_TS_SSRC.pack_into


def _short(data: bytes) -> RemoteProtocolError:
    return RemoteProtocolError(f"RTP packet of {len(data)} bytes is shorter than its header")


def rtp_seq(data: bytes) -> int:
    """Sequence number (bytes 2-3) without parsing the rest."""
    try:
        return _unpack_u16(data, 2)[0]
    except struct.error:
        raise _short(data) from None


def rtp_timestamp(data: bytes) -> int:
    """RTP timestamp (bytes 4-7)."""
    try:
        return _unpack_u32(data, 4)[0]
    except struct.error:
        raise _short(data) from None


def rtp_ssrc(data: bytes) -> int:
    """SSRC (bytes 8-11)."""
    try:
        return _unpack_u32(data, 8)[0]
    except struct.error:
        raise _short(data) from None


def rewrite_rtp(data: bytes, seq: int, timestamp: int, ssrc: int) -> bytes:
    """Copy of ``data`` with bytes 2-11 replaced; values wrap modulo 2**16 / 2**32.

    ``bytearray`` + ``pack_into`` + ``bytes`` measured fastest (about 0.2 us for a 1400-byte
    packet, against 0.3 us for a join over a memoryview and 0.4 us for slice concatenation).
    """
    if len(data) < 12:
        raise _short(data)
    buf = bytearray(data)
    _pack_seq_ts_ssrc_into(buf, 2, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc & 0xFFFFFFFF)
    return bytes(buf)


def restamp_rtcp(data: bytes, old_ssrc: int, ssrc: int, ts_delta: int) -> bytes:
    """Copy of a compound RTCP packet with every sender SSRC ``old_ssrc`` made ``ssrc`` and each
    sender report's RTP timestamp moved by ``ts_delta`` (a stream renumbered by
    :func:`rewrite_rtp`, so its reports still map its timestamps to wall-clock time)."""
    out = bytearray(data)
    at = 0
    while at + 8 <= len(out):
        if _unpack_u32(out, at + 4)[0] == old_ssrc:
            _U32.pack_into(out, at + 4, ssrc & 0xFFFFFFFF)
        if out[at + 1] == RTCP_PT_SR and at + 20 <= len(out):
            ts = _unpack_u32(out, at + 16)[0]
            _U32.pack_into(out, at + 16, (ts + ts_delta) & 0xFFFFFFFF)
        at += (_unpack_u16(out, at + 2)[0] + 1) * 4
    return bytes(out)


def rtp_payload_offset(data: bytes) -> int:
    """Where the payload starts: after the CSRCs and the header extension, if any."""
    if len(data) < 12:
        raise _short(data)
    offset = 12 + 4 * (data[0] & 0x0F)
    if data[0] & 0x10:
        if len(data) < offset + 4:
            raise RemoteProtocolError("RTP header extension truncated")
        offset += 4 + 4 * _unpack_u16(data, offset + 2)[0]
    if offset > len(data):
        raise RemoteProtocolError("RTP header longer than the packet")
    return offset


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 demultiplexing: the second byte of RTCP is a packet type in 192-223.

    That covers SR/RR/SDES/BYE/APP (200-204) and also the AVPF feedback (205, 206) and XR (207)
    packets players send; RTP payload types 64-95 with the marker set would collide, which is
    why RFC 5761 forbids them on a multiplexed channel.
    """
    return len(data) >= 2 and 192 <= data[1] <= 223


# -- RTCP ----------------------------------------------------------------------------------------


def rtcp_packet_type(data: bytes) -> int:
    """Packet type of the first RTCP packet in ``data``."""
    if len(data) < 4:
        raise RemoteProtocolError("RTCP packet shorter than its header")
    return data[1]


def split_rtcp(data: bytes) -> list[bytes]:
    """Split a compound RTCP packet by its length fields (RFC 3550 §6.1).

    Every part must be version 2 and fit exactly; an empty input is an error because a compound
    packet holds at least one report.
    """
    if not data:
        raise RemoteProtocolError("empty RTCP packet")
    parts = []
    pos = 0
    end = len(data)
    while pos < end:
        if end - pos < 4:
            raise RemoteProtocolError(f"{end - pos} trailing bytes after RTCP packets")
        if data[pos] >> 6 != 2:
            raise RemoteProtocolError(f"RTCP version {data[pos] >> 6}, expected 2")
        size = (_unpack_u16(data, pos + 2)[0] + 1) * 4
        if pos + size > end:
            raise RemoteProtocolError(f"RTCP length says {size} bytes but only {end - pos} remain")
        parts.append(bytes(data[pos : pos + size]))
        pos += size
    return parts


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception statistics for one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int
    cumulative_lost: int
    highest_seq: int
    jitter: int
    lsr: int
    dlsr: int


@dataclass(frozen=True, slots=True)
class SenderReport:
    """An RTCP SR; ``reports`` (an addition) holds its reception report blocks."""

    ssrc: int
    ntp_sec: int
    ntp_frac: int
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class Bye:
    """An RTCP BYE; ``reason`` is None when the packet carries none."""

    ssrcs: tuple[int, ...]
    reason: str | None = None


def _checked_packet(data: bytes, packet_type: int, name: str) -> bytes:
    """The first RTCP packet of ``data``, checked for version, type and declared length."""
    if len(data) < 4:
        raise RemoteProtocolError(f"RTCP {name} shorter than its header")
    if data[0] >> 6 != 2:
        raise RemoteProtocolError(f"RTCP version {data[0] >> 6}, expected 2")
    if data[1] != packet_type:
        raise RemoteProtocolError(f"RTCP packet type {data[1]}, expected {packet_type} ({name})")
    size = (_unpack_u16(data, 2)[0] + 1) * 4
    if size > len(data):
        raise RemoteProtocolError(f"RTCP {name} length {size} exceeds the {len(data)} bytes")
    return bytes(data[:size])


def _parse_rtcp(decl: Struct, data: bytes, packet_type: int, name: str) -> Any:
    packet = _checked_packet(data, packet_type, name)
    try:
        return decl.parse(packet)
    except ConstructError as exc:
        raise RemoteProtocolError(f"bad RTCP {name}: {exc}") from None


def _block(c: Any) -> ReportBlock:
    return ReportBlock(
        c.ssrc,
        c.fraction_lost,
        c.cumulative_lost,
        c.highest_seq,
        c.jitter,
        c.lsr,
        c.dlsr,
    )


def _block_dicts(blocks: tuple[ReportBlock, ...]) -> list[dict[str, int]]:
    if len(blocks) > 31:
        raise LocalProtocolError(f"{len(blocks)} report blocks; RTCP allows 31 per packet")
    return [
        {
            "ssrc": b.ssrc,
            "fraction_lost": b.fraction_lost,
            "cumulative_lost": b.cumulative_lost,
            "highest_seq": b.highest_seq,
            "jitter": b.jitter,
            "lsr": b.lsr,
            "dlsr": b.dlsr,
        }
        for b in blocks
    ]


def _build(decl: Struct, values: dict[str, object], what: str) -> bytes:
    try:
        return decl.build(values)
    except ConstructError as exc:
        raise LocalProtocolError(f"cannot build RTCP {what}: {exc}") from None


def parse_sender_report(data: bytes) -> SenderReport:
    """Parse the SR at the start of ``data`` (use :func:`split_rtcp` on compound packets)."""
    p = _parse_rtcp(SENDER_REPORT, data, RTCP_PT_SR, "SR")
    return SenderReport(
        p.ssrc,
        p.ntp_sec,
        p.ntp_frac,
        p.rtp_timestamp,
        p.packet_count,
        p.octet_count,
        tuple(_block(b) for b in p.reports),
    )


def build_sender_report(sr: SenderReport) -> bytes:
    values = {
        "flags": {},
        "ssrc": sr.ssrc,
        "ntp_sec": sr.ntp_sec,
        "ntp_frac": sr.ntp_frac,
        "rtp_timestamp": sr.rtp_timestamp,
        "packet_count": sr.packet_count,
        "octet_count": sr.octet_count,
        "reports": _block_dicts(sr.reports),
    }
    return _build(SENDER_REPORT, values, "SR")


def parse_receiver_report(data: bytes) -> ReceiverReport:
    """Parse the RR at the start of ``data``."""
    p = _parse_rtcp(RECEIVER_REPORT, data, RTCP_PT_RR, "RR")
    return ReceiverReport(p.ssrc, tuple(_block(b) for b in p.reports))


def build_receiver_report(rr: ReceiverReport) -> bytes:
    values = {"flags": {}, "ssrc": rr.ssrc, "reports": _block_dicts(rr.reports)}
    return _build(RECEIVER_REPORT, values, "RR")


def parse_bye(data: bytes) -> Bye:
    """Parse the BYE at the start of ``data``; a reason that is not UTF-8 is decoded leniently."""
    p = _parse_rtcp(BYE, data, RTCP_PT_BYE, "BYE")
    reason = p.reason
    text = None if reason is None else reason.decode("utf-8", "replace")
    return Bye(tuple(p.ssrcs), text)


def build_bye(bye: Bye) -> bytes:
    if len(bye.ssrcs) > 31:
        raise LocalProtocolError(f"{len(bye.ssrcs)} SSRCs; a BYE holds at most 31")
    reason = None if bye.reason is None else bye.reason.encode("utf-8")
    if reason is not None and len(reason) > 255:
        raise LocalProtocolError("BYE reason longer than 255 bytes")
    return _build(BYE, {"flags": {}, "ssrcs": list(bye.ssrcs), "reason": reason}, "BYE")


def build_sdes_cname(ssrc: int, cname: str) -> bytes:
    """An RTCP SDES packet with one chunk carrying a CNAME (RFC 3550 §6.5): every compound
    RTCP packet a sender emits must hold one, after its SR."""
    text = cname.encode()[:255]
    chunk = struct.pack(">IBB", ssrc & 0xFFFFFFFF, 1, len(text)) + text + b"\x00"
    chunk += b"\x00" * (-len(chunk) % 4)
    return struct.pack(">BBH", 0x81, RTCP_PT_SDES, len(chunk) // 4) + chunk


def rtcp_has_bye(payload: bytes | memoryview) -> bool:
    """Does an RTCP compound packet hold a BYE (type 203)? Lenient and cheap: a sender that
    said goodbye ends a stream, whatever else its compound holds."""
    offset = 0
    while offset + 4 <= len(payload):
        if payload[offset + 1] == RTCP_PT_BYE:
            return True
        offset += (int.from_bytes(payload[offset + 2 : offset + 4], "big") + 1) * 4
    return False
