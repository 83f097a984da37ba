"""RDT, Real's data transport: data packets and the control packets around them.

Theory of operation
-------------------
One UDP datagram (or one ``$``-framed TCP chunk) holds one or more RDT packets. Bytes 1-2 tell
the kind: below 0xFF00 they are a data packet's sequence number, from 0xFF00 up a control packet
type. A packet ends where its length field says (flag 0x80 of byte 0, for the types that have
one), where its fixed layout ends, or at the end of the datagram. :func:`parse_rdt` finds each
packet's extent first, like GStreamer's ``gstrdtbuffer.c``, then parses exactly that slice with
the construct declaration of its type.

Field names follow Wireshark's ``packet-rdt.c`` and Helix's ``tngpkt.pm``, with one renaming
taken from ffmpeg and PEERS.md: byte 0's 5-bit stream number of a data packet is ``set_id``
(the SDP ``streamid``). Byte 3's 6-bit ASM rule number is kept whole as ``asm_rule``; ffmpeg
reads it as ``stream_id << 1 | not_keyframe`` (rules come in pairs), available as the
``stream_id`` and ``keyframe`` properties. Expansions follow Wireshark and GStreamer: a
``set_id`` of 31 and an ``asm_rule`` of 63 are followed by a 16-bit value. ffmpeg's
``ff_rdt_parse_header`` instead expands when ``asm_rule >> 1 == 31`` (rules 62 and 63), so
never send rule 62.

The hot path (one call per forwarded packet) is :func:`rdt_data_header` and
:func:`rewrite_rdt_data`, written with :mod:`struct`; the tests check they agree with the
declarations.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from construct import (
    BitsInteger,
    BitStruct,
    Const,
    Construct,
    ConstructError,
    Flag,
    GreedyBytes,
    If,
    Int8ub,
    Int16ub,
    Int32sb,
    Int32ub,
    PrefixedArray,
    Rebuild,
    Struct,
    Terminated,
    this,
)

from mediacache.errors import LocalProtocolError
from mediacache_realmedia.errors import RealProtocolError

__all__ = [
    "ACK",
    "ASM_ACTION",
    "BANDWIDTH_REPORT",
    "BW_PROBING",
    "CONGESTION",
    "LATENCY_REPORT",
    "REPORT",
    "RTT_REQUEST",
    "RTT_RESPONSE",
    "STREAM_END",
    "TRANSPORT_INFO_REQUEST",
    "TRANSPORT_INFO_RESPONSE",
    "RdtAck",
    "RdtAsmAction",
    "RdtBandwidthReport",
    "RdtBufferInfo",
    "RdtBwProbing",
    "RdtCongestion",
    "RdtData",
    "RdtLatencyReport",
    "RdtPacket",
    "RdtReport",
    "RdtRttRequest",
    "RdtRttResponse",
    "RdtStreamEnd",
    "RdtTransportInfoRequest",
    "RdtTransportInfoResponse",
    "RdtUnknownControl",
    "StreamEndReason",
    "build_asm_action",
    "build_bandwidth_report",
    "build_data_packet",
    "build_latency_report",
    "build_rdt",
    "build_rdt_datagram",
    "build_rtt_request",
    "build_rtt_response",
    "build_stream_end",
    "parse_rdt",
    "rdt_data_header",
    "rdt_data_payload_offset",
    "rewrite_rdt_data",
    "split_rdt",
]

# Control packet types (bytes 1-2), as in Wireshark's packet-rdt.c.
ASM_ACTION = 0xFF00
BANDWIDTH_REPORT = 0xFF01
ACK = 0xFF02
RTT_REQUEST = 0xFF03
RTT_RESPONSE = 0xFF04
CONGESTION = 0xFF05
STREAM_END = 0xFF06
REPORT = 0xFF07
LATENCY_REPORT = 0xFF08
TRANSPORT_INFO_REQUEST = 0xFF09
TRANSPORT_INFO_RESPONSE = 0xFF0A
BW_PROBING = 0xFF0B

_FIRST_CONTROL = 0xFF00

# --------------------------------------------------------------------------------------------
# construct declarations
# --------------------------------------------------------------------------------------------


def _len_included_flags() -> BitStruct:
    """Byte 0 of the control packets whose only flag is length-included."""
    return BitStruct("length_included" / Flag, "reserved" / BitsInteger(7))


def _length_field(header_len: int, variable: Any = None) -> Construct:
    """The optional length field: present iff flagged, rebuilt as header + variable part."""

    def total(ctx: Any) -> int:
        return header_len + (variable(ctx) if variable else 0)

    return If(this.flags.length_included, Rebuild(Int16ub, total))


def _data_len(ctx: Any) -> int:
    f, f3 = ctx["flags"], ctx["flags2"]
    return (
        10
        + 2 * (f["set_id"] == 31)
        + 2 * bool(f["need_reliable"])
        + 2 * (f3["asm_rule"] == 63)
        + len(ctx["payload"])
    )


_DATA = Struct(
    "flags"
    / BitStruct(
        "length_included" / Flag,
        "need_reliable" / Flag,
        "set_id" / BitsInteger(5),
        "is_reliable" / Flag,
    ),
    "seq" / Int16ub,
    "length" / If(this.flags.length_included, Rebuild(Int16ub, _data_len)),
    "flags2" / BitStruct("back_to_back" / Flag, "slow_data" / Flag, "asm_rule" / BitsInteger(6)),
    "timestamp" / Int32ub,
    "set_id_ext" / If(this.flags.set_id == 31, Int16ub),
    "total_reliable" / If(this.flags.need_reliable, Int16ub),
    "asm_rule_ext" / If(this.flags2.asm_rule == 63, Int16ub),
    "payload" / GreedyBytes,
)

_ASM_ACTION = Struct(
    "flags"
    / BitStruct(
        "length_included" / Flag, "stream_id" / BitsInteger(5), "reserved" / BitsInteger(2)
    ),
    "packet_type" / Const(ASM_ACTION, Int16ub),
    "reliable_seq" / Int16ub,
    "length"
    / _length_field(7, lambda c: 2 * (c["flags"]["stream_id"] == 31) + len(c["data"])),
    "stream_id_ext" / If(this.flags.stream_id == 31, Int16ub),
    "data" / GreedyBytes,
)

_BANDWIDTH_REPORT = Struct(
    "flags" / _len_included_flags(),
    "packet_type" / Const(BANDWIDTH_REPORT, Int16ub),
    "length" / _length_field(12),
    "interval" / Int16ub,
    "bandwidth" / Int32ub,
    "sequence" / Int8ub,
    Terminated,
)

_ACK = Struct(
    "flags"
    / BitStruct("length_included" / Flag, "lost_high" / Flag, "reserved" / BitsInteger(6)),
    "packet_type" / Const(ACK, Int16ub),
    "length" / _length_field(5, lambda c: len(c["data"])),
    "data" / GreedyBytes,
)

_RTT_REQUEST = Struct("reserved" / Int8ub, "packet_type" / Const(RTT_REQUEST, Int16ub), Terminated)

_RTT_RESPONSE = Struct(
    "reserved" / Int8ub,
    "packet_type" / Const(RTT_RESPONSE, Int16ub),
    "ts_sec" / Int32ub,
    "ts_usec" / Int32ub,
    Terminated,
)

_CONGESTION = Struct(
    "reserved" / Int8ub,
    "packet_type" / Const(CONGESTION, Int16ub),
    "xmit_multiplier" / Int32sb,
    "recv_multiplier" / Int32sb,
    Terminated,
)

_STREAM_END = Struct(
    "flags"
    / BitStruct(
        "need_reliable" / Flag,
        "stream_id" / BitsInteger(5),
        "packet_sent" / Flag,
        "ext_flag" / Flag,
    ),
    "packet_type" / Const(STREAM_END, Int16ub),
    "seq" / Int16ub,
    "timestamp" / Int32ub,
    "stream_id_ext" / If(this.flags.stream_id == 31, Int16ub),
    "total_reliable" / If(this.flags.need_reliable, Int16ub),
    "reason"
    / If(
        this.flags.ext_flag,
        Struct(
            "dummy_flags" / Int8ub,
            "dummy_type" / Int16ub,
            "code" / Int32ub,
            "text" / GreedyBytes,
        ),
    ),
    Terminated,
)

_REPORT = Struct(
    "flags" / _len_included_flags(),
    "packet_type" / Const(REPORT, Int16ub),
    "length" / _length_field(5, lambda c: len(c["data"])),
    "data" / GreedyBytes,
)

_LATENCY_REPORT = Struct(
    "flags" / _len_included_flags(),
    "packet_type" / Const(LATENCY_REPORT, Int16ub),
    "length" / _length_field(9),
    "server_out_time" / Int32ub,
    Terminated,
)

_TRANSPORT_INFO_REQUEST = Struct(
    "flags"
    / BitStruct(
        "reserved" / BitsInteger(6), "request_rtt_info" / Flag, "request_buffer_info" / Flag
    ),
    "packet_type" / Const(TRANSPORT_INFO_REQUEST, Int16ub),
    "request_time_ms" / If(this.flags.request_rtt_info, Int32ub),
    Terminated,
)

_BUFFER_INFO = Struct(
    "stream_id" / Int16ub,
    "lowest_timestamp" / Int32ub,
    "highest_timestamp" / Int32ub,
    "bytes_buffered" / Int32ub,
)

_TRANSPORT_INFO_RESPONSE = Struct(
    "flags"
    / BitStruct(
        "reserved" / BitsInteger(5),
        "has_rtt_info" / Flag,
        "is_delayed" / Flag,
        "has_buffer_info" / Flag,
    ),
    "packet_type" / Const(TRANSPORT_INFO_RESPONSE, Int16ub),
    "request_time_ms" / If(this.flags.has_rtt_info, Int32ub),
    "response_time_ms" / If(this.flags.has_rtt_info & this.flags.is_delayed, Int32ub),
    "buffer_info" / If(this.flags.has_buffer_info, PrefixedArray(Int16ub, _BUFFER_INFO)),
    Terminated,
)

_BW_PROBING = Struct(
    "flags" / _len_included_flags(),
    "packet_type" / Const(BW_PROBING, Int16ub),
    "length" / _length_field(10),
    "seq" / Int8ub,
    "timestamp" / Int32ub,
    Terminated,
)

_UNKNOWN_CONTROL = Struct("flags" / Int8ub, "packet_type" / Int16ub, "data" / GreedyBytes)

# --------------------------------------------------------------------------------------------
# packets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RdtData:
    """A data packet. ``total_reliable`` (PEERS.md: "reliable sequence") is None when absent.

    ``set_id`` is byte 0's stream number (Wireshark: stream-id); ``asm_rule`` is byte 3's rule
    number, which ffmpeg reads as ``stream_id << 1 | not_keyframe``.
    """

    set_id: int
    seq: int
    asm_rule: int
    timestamp: int
    payload: bytes
    total_reliable: int | None = 0
    is_reliable: bool = False
    back_to_back: bool = False
    slow_data: bool = False
    length_included: bool = False

    @property
    def stream_id(self) -> int:
        """The stream within the set, as ffmpeg and PEERS.md read byte 3."""
        return self.asm_rule >> 1

    @property
    def keyframe(self) -> bool:
        """Even rules are the keyframe rules (ffmpeg: ``!is_no_keyframe``)."""
        return not self.asm_rule & 1


@dataclass(frozen=True, slots=True)
class RdtAsmAction:
    """0xFF00: an ASM action (rule subscription changes) for one stream."""

    stream_id: int
    reliable_seq: int
    data: bytes = b""
    length_included: bool = False
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtBandwidthReport:
    """0xFF01: the client's measured bandwidth (bits/s) over ``interval`` ms."""

    interval: int
    bandwidth: int
    sequence: int
    length_included: bool = False
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtAck:
    """0xFF02: acknowledgement/NAK bitmap, kept opaque as Wireshark does."""

    data: bytes = b""
    lost_high: bool = False
    length_included: bool = False
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtRttRequest:
    """0xFF03: the three-byte round-trip-time probe."""

    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtRttResponse:
    """0xFF04: answer to an RTT request, carrying the answerer's clock."""

    ts_sec: int
    ts_usec: int
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtCongestion:
    """0xFF05: signed transmit/receive multipliers."""

    xmit_multiplier: int
    recv_multiplier: int
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class StreamEndReason:
    """The optional extension of a stream-end packet (Wireshark: dummy flags/type, code, text)."""

    code: int
    text: bytes = b""
    dummy_flags: int = 0
    dummy_type: int = 0


@dataclass(frozen=True, slots=True)
class RdtStreamEnd:
    """0xFF06: the server sent the last packet of ``stream_id``; ``seq`` is the next data seq."""

    stream_id: int
    seq: int
    timestamp: int
    total_reliable: int | None = None
    packet_sent: bool = True
    reason: StreamEndReason | None = None


@dataclass(frozen=True, slots=True)
class RdtReport:
    """0xFF07: a receiver report, opaque."""

    data: bytes = b""
    length_included: bool = False
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtLatencyReport:
    """0xFF08: the server's send time (ms), for latency measurement."""

    server_out_time: int
    length_included: bool = False
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtTransportInfoRequest:
    """0xFF09: asks for RTT info (with a request time) and/or buffer info."""

    request_time_ms: int | None = None
    request_buffer_info: bool = False
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtBufferInfo:
    """One stream's buffer state in a transport-info response."""

    stream_id: int
    lowest_timestamp: int
    highest_timestamp: int
    bytes_buffered: int


@dataclass(frozen=True, slots=True)
class RdtTransportInfoResponse:
    """0xFF0A: RTT info (a response time only when delayed) and buffer info."""

    request_time_ms: int | None = None
    response_time_ms: int | None = None
    buffer_info: tuple[RdtBufferInfo, ...] | None = None
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtBwProbing:
    """0xFF0B: bandwidth probing packet."""

    seq: int
    timestamp: int
    length_included: bool = False
    reserved: int = 0


@dataclass(frozen=True, slots=True)
class RdtUnknownControl:
    """A control type newer than this module (0xFF0C and up), kept byte for byte."""

    packet_type: int
    flags: int = 0
    data: bytes = b""


RdtPacket = (
    RdtData
    | RdtAsmAction
    | RdtBandwidthReport
    | RdtAck
    | RdtRttRequest
    | RdtRttResponse
    | RdtCongestion
    | RdtStreamEnd
    | RdtReport
    | RdtLatencyReport
    | RdtTransportInfoRequest
    | RdtTransportInfoResponse
    | RdtBwProbing
    | RdtUnknownControl
)

# --------------------------------------------------------------------------------------------
# framing and parsing
# --------------------------------------------------------------------------------------------

_PARSE_ERRORS = (ConstructError, struct.error, ValueError, OverflowError)
_BUILD_ERRORS = (ConstructError, struct.error, ValueError, OverflowError, KeyError, TypeError)

#: Types with a length field when flag 0x80 is set: type -> offset of the field.
_LENGTH_AT = {
    ASM_ACTION: 5,
    BANDWIDTH_REPORT: 3,
    ACK: 3,
    REPORT: 3,
    LATENCY_REPORT: 3,
    BW_PROBING: 3,
}


def _extent(data: bytes, pos: int) -> int:
    """Length of the RDT packet at ``pos`` (framing only; the slice is parsed afterwards)."""
    left = len(data) - pos
    if left < 3:
        raise RealProtocolError(f"RDT packet at offset {pos} is {left} bytes, shorter than 3")
    b0 = data[pos]
    ptype = (data[pos + 1] << 8) | data[pos + 2]
    length: int
    if ptype < _FIRST_CONTROL or ptype in _LENGTH_AT:
        at = 3 if ptype < _FIRST_CONTROL else _LENGTH_AT[ptype]
        if not b0 & 0x80:
            return left
        if left < at + 2:
            raise RealProtocolError(f"RDT packet at offset {pos} ends inside its length field")
        length = (data[pos + at] << 8) | data[pos + at + 1]
    elif ptype == RTT_REQUEST:
        length = 3
    elif ptype in (RTT_RESPONSE, CONGESTION):
        length = 11
    elif ptype == STREAM_END:
        if b0 & 0x01:  # reason extension: its text runs to the end (Wireshark)
            return left
        length = 9 + 2 * bool(b0 & 0x80) + 2 * ((b0 & 0x7C) == 0x7C)
    elif ptype == TRANSPORT_INFO_REQUEST:
        length = 3 + 4 * bool(b0 & 0x02)
    elif ptype == TRANSPORT_INFO_RESPONSE:
        length = 3 + (4 + 4 * bool(b0 & 0x02) if b0 & 0x04 else 0)
        if b0 & 0x01:
            if left < length + 2:
                raise RealProtocolError(f"RDT transport info at offset {pos} is truncated")
            count = (data[pos + length] << 8) | data[pos + length + 1]
            length += 2 + 14 * count
    else:
        return left
    if length > left:
        raise RealProtocolError(f"RDT packet at offset {pos} needs {length} bytes, {left} left")
    if length < 3:
        raise RealProtocolError(f"RDT packet at offset {pos} declares length {length}")
    return length


def _parse(decl: Construct, data: bytes, what: str) -> Any:
    try:
        return decl.parse(data)
    except _PARSE_ERRORS as exc:
        raise RealProtocolError(f"malformed RDT {what}: {exc}") from exc


def _check_length(c: Any, size: int, what: str) -> None:
    if c.get("length") is not None and c.length != size:
        raise RealProtocolError(f"RDT {what} declares length {c.length}, has {size} bytes")


def _parse_one(chunk: bytes) -> RdtPacket:
    ptype = (chunk[1] << 8) | chunk[2]
    n = len(chunk)
    if ptype < _FIRST_CONTROL:
        c = _parse(_DATA, chunk, "data packet")
        _check_length(c, n, "data packet")
        return RdtData(
            set_id=c.flags.set_id if c.set_id_ext is None else c.set_id_ext,
            seq=c.seq,
            asm_rule=c.flags2.asm_rule if c.asm_rule_ext is None else c.asm_rule_ext,
            timestamp=c.timestamp,
            payload=c.payload,
            total_reliable=c.total_reliable,
            is_reliable=c.flags.is_reliable,
            back_to_back=c.flags2.back_to_back,
            slow_data=c.flags2.slow_data,
            length_included=c.flags.length_included,
        )
    if ptype == ASM_ACTION:
        c = _parse(_ASM_ACTION, chunk, "ASM action")
        _check_length(c, n, "ASM action")
        sid = c.flags.stream_id if c.stream_id_ext is None else c.stream_id_ext
        return RdtAsmAction(sid, c.reliable_seq, c.data, c.flags.length_included, c.flags.reserved)
    if ptype == BANDWIDTH_REPORT:
        c = _parse(_BANDWIDTH_REPORT, chunk, "bandwidth report")
        _check_length(c, n, "bandwidth report")
        return RdtBandwidthReport(
            c.interval, c.bandwidth, c.sequence, c.flags.length_included, c.flags.reserved
        )
    if ptype == ACK:
        c = _parse(_ACK, chunk, "ack")
        _check_length(c, n, "ack")
        return RdtAck(c.data, c.flags.lost_high, c.flags.length_included, c.flags.reserved)
    if ptype == RTT_REQUEST:
        return RdtRttRequest(_parse(_RTT_REQUEST, chunk, "RTT request").reserved)
    if ptype == RTT_RESPONSE:
        c = _parse(_RTT_RESPONSE, chunk, "RTT response")
        return RdtRttResponse(c.ts_sec, c.ts_usec, c.reserved)
    if ptype == CONGESTION:
        c = _parse(_CONGESTION, chunk, "congestion")
        return RdtCongestion(c.xmit_multiplier, c.recv_multiplier, c.reserved)
    if ptype == STREAM_END:
        c = _parse(_STREAM_END, chunk, "stream end")
        reason = None
        if c.reason is not None:
            r = c.reason
            reason = StreamEndReason(r.code, r.text, r.dummy_flags, r.dummy_type)
        return RdtStreamEnd(
            stream_id=c.flags.stream_id if c.stream_id_ext is None else c.stream_id_ext,
            seq=c.seq,
            timestamp=c.timestamp,
            total_reliable=c.total_reliable,
            packet_sent=c.flags.packet_sent,
            reason=reason,
        )
    if ptype == REPORT:
        c = _parse(_REPORT, chunk, "report")
        _check_length(c, n, "report")
        return RdtReport(c.data, c.flags.length_included, c.flags.reserved)
    if ptype == LATENCY_REPORT:
        c = _parse(_LATENCY_REPORT, chunk, "latency report")
        _check_length(c, n, "latency report")
        return RdtLatencyReport(c.server_out_time, c.flags.length_included, c.flags.reserved)
    if ptype == TRANSPORT_INFO_REQUEST:
        c = _parse(_TRANSPORT_INFO_REQUEST, chunk, "transport info request")
        return RdtTransportInfoRequest(
            c.request_time_ms, c.flags.request_buffer_info, c.flags.reserved
        )
    if ptype == TRANSPORT_INFO_RESPONSE:
        c = _parse(_TRANSPORT_INFO_RESPONSE, chunk, "transport info response")
        infos = None
        if c.buffer_info is not None:
            infos = tuple(
                RdtBufferInfo(
                    b.stream_id, b.lowest_timestamp, b.highest_timestamp, b.bytes_buffered
                )
                for b in c.buffer_info
            )
        return RdtTransportInfoResponse(
            c.request_time_ms, c.response_time_ms, infos, c.flags.reserved
        )
    if ptype == BW_PROBING:
        c = _parse(_BW_PROBING, chunk, "BW probing")
        _check_length(c, n, "BW probing")
        return RdtBwProbing(c.seq, c.timestamp, c.flags.length_included, c.flags.reserved)
    c = _parse(_UNKNOWN_CONTROL, chunk, "control packet")
    return RdtUnknownControl(c.packet_type, c.flags, c.data)


def split_rdt(data: bytes) -> list[bytes]:
    """The bytes of each RDT packet in one datagram or frame, unparsed (the recorder's path:
    a frame usually holds one packet, which comes back as the same object)."""
    if not data:
        raise RealProtocolError("empty RDT datagram")
    first = _extent(data, 0)
    if first == len(data):
        return [data]
    chunks = [data[:first]]
    pos = first
    while pos < len(data):
        size = _extent(data, pos)
        chunks.append(data[pos : pos + size])
        pos += size
    return chunks


def parse_rdt(data: bytes) -> list[RdtPacket]:
    """Every RDT packet in one datagram (or one interleaved TCP frame), in order."""
    data = bytes(data)
    if not data:
        raise RealProtocolError("empty RDT datagram")
    packets: list[RdtPacket] = []
    pos = 0
    while pos < len(data):
        size = _extent(data, pos)
        packets.append(_parse_one(data[pos : pos + size]))
        pos += size
    return packets


# --------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------


def _build(decl: Construct, obj: dict[str, Any], what: str) -> bytes:
    try:
        return decl.build(obj)
    except _BUILD_ERRORS as exc:
        raise LocalProtocolError(f"cannot build RDT {what}: {exc}") from exc


def _split_ext(value: int, limit: int) -> tuple[int, int | None]:
    """A 5- or 6-bit field with 16-bit expansion: (field, expansion or None)."""
    return (value, None) if value < limit else (limit, value)


def _build_data(p: RdtData) -> bytes:
    if not 0 <= p.seq < _FIRST_CONTROL:
        raise LocalProtocolError(f"RDT data sequence {p.seq} is not below 0xFF00")
    set_id, set_ext = _split_ext(p.set_id, 31)
    rule, rule_ext = _split_ext(p.asm_rule, 63)
    obj = {
        "flags": {
            "length_included": p.length_included,
            "need_reliable": p.total_reliable is not None,
            "set_id": set_id,
            "is_reliable": p.is_reliable,
        },
        "seq": p.seq,
        "flags2": {"back_to_back": p.back_to_back, "slow_data": p.slow_data, "asm_rule": rule},
        "timestamp": p.timestamp,
        "set_id_ext": set_ext,
        "total_reliable": p.total_reliable,
        "asm_rule_ext": rule_ext,
        "payload": p.payload,
    }
    return _build(_DATA, obj, "data packet")


def build_rdt(packet: RdtPacket) -> bytes:
    """The bytes of one RDT packet; :class:`LocalProtocolError` if a field does not fit."""
    p = packet
    if isinstance(p, RdtData):
        return _build_data(p)
    if isinstance(p, RdtAsmAction):
        sid, ext = _split_ext(p.stream_id, 31)
        flags = {"length_included": p.length_included, "stream_id": sid, "reserved": p.reserved}
        obj = {"flags": flags, "reliable_seq": p.reliable_seq, "stream_id_ext": ext,
               "data": p.data}
        return _build(_ASM_ACTION, obj, "ASM action")
    if isinstance(p, RdtBandwidthReport):
        obj = {
            "flags": {"length_included": p.length_included, "reserved": p.reserved},
            "interval": p.interval,
            "bandwidth": p.bandwidth,
            "sequence": p.sequence,
        }
        return _build(_BANDWIDTH_REPORT, obj, "bandwidth report")
    if isinstance(p, RdtAck):
        flags = {"length_included": p.length_included, "lost_high": p.lost_high,
                 "reserved": p.reserved}
        return _build(_ACK, {"flags": flags, "data": p.data}, "ack")
    if isinstance(p, RdtRttRequest):
        return _build(_RTT_REQUEST, {"reserved": p.reserved}, "RTT request")
    if isinstance(p, RdtRttResponse):
        obj = {"reserved": p.reserved, "ts_sec": p.ts_sec, "ts_usec": p.ts_usec}
        return _build(_RTT_RESPONSE, obj, "RTT response")
    if isinstance(p, RdtCongestion):
        obj = {"reserved": p.reserved, "xmit_multiplier": p.xmit_multiplier,
               "recv_multiplier": p.recv_multiplier}
        return _build(_CONGESTION, obj, "congestion")
    if isinstance(p, RdtStreamEnd):
        sid, ext = _split_ext(p.stream_id, 31)
        reason = None
        if p.reason is not None:
            r = p.reason
            reason = {"dummy_flags": r.dummy_flags, "dummy_type": r.dummy_type, "code": r.code,
                      "text": r.text}
        obj = {
            "flags": {
                "need_reliable": p.total_reliable is not None,
                "stream_id": sid,
                "packet_sent": p.packet_sent,
                "ext_flag": p.reason is not None,
            },
            "seq": p.seq,
            "timestamp": p.timestamp,
            "stream_id_ext": ext,
            "total_reliable": p.total_reliable,
            "reason": reason,
        }
        return _build(_STREAM_END, obj, "stream end")
    if isinstance(p, RdtReport):
        flags = {"length_included": p.length_included, "reserved": p.reserved}
        return _build(_REPORT, {"flags": flags, "data": p.data}, "report")
    if isinstance(p, RdtLatencyReport):
        flags = {"length_included": p.length_included, "reserved": p.reserved}
        obj = {"flags": flags, "server_out_time": p.server_out_time}
        return _build(_LATENCY_REPORT, obj, "latency report")
    if isinstance(p, RdtTransportInfoRequest):
        flags = {
            "reserved": p.reserved,
            "request_rtt_info": p.request_time_ms is not None,
            "request_buffer_info": p.request_buffer_info,
        }
        obj = {"flags": flags, "request_time_ms": p.request_time_ms}
        return _build(_TRANSPORT_INFO_REQUEST, obj, "transport info request")
    if isinstance(p, RdtTransportInfoResponse):
        if p.response_time_ms is not None and p.request_time_ms is None:
            raise LocalProtocolError("a delayed transport info response needs a request time")
        infos = None
        if p.buffer_info is not None:
            infos = [
                {
                    "stream_id": b.stream_id,
                    "lowest_timestamp": b.lowest_timestamp,
                    "highest_timestamp": b.highest_timestamp,
                    "bytes_buffered": b.bytes_buffered,
                }
                for b in p.buffer_info
            ]
        flags = {
            "reserved": p.reserved,
            "has_rtt_info": p.request_time_ms is not None,
            "is_delayed": p.response_time_ms is not None,
            "has_buffer_info": p.buffer_info is not None,
        }
        obj = {
            "flags": flags,
            "request_time_ms": p.request_time_ms,
            "response_time_ms": p.response_time_ms,
            "buffer_info": infos,
        }
        return _build(_TRANSPORT_INFO_RESPONSE, obj, "transport info response")
    if isinstance(p, RdtBwProbing):
        flags = {"length_included": p.length_included, "reserved": p.reserved}
        obj = {"flags": flags, "seq": p.seq, "timestamp": p.timestamp}
        return _build(_BW_PROBING, obj, "BW probing")
    if isinstance(p, RdtUnknownControl):
        if not BW_PROBING < p.packet_type <= 0xFFFF:
            raise LocalProtocolError(f"0x{p.packet_type:04x} is not an unknown control type")
        obj = {"flags": p.flags, "packet_type": p.packet_type, "data": p.data}
        return _build(_UNKNOWN_CONTROL, obj, "control packet")
    raise TypeError(f"not an RDT packet: {packet!r}")


def _self_delimiting(p: RdtPacket) -> bool:
    """Whether a receiver can find where ``p`` ends when more packets follow it."""
    if isinstance(p, RdtAsmAction | RdtBandwidthReport | RdtAck | RdtReport | RdtLatencyReport
                  | RdtBwProbing):
        return p.length_included
    if isinstance(p, RdtStreamEnd):
        return p.reason is None
    return not isinstance(p, RdtUnknownControl)


def build_rdt_datagram(packets: Iterable[RdtPacket]) -> bytes:
    """Concatenate packets into one datagram.

    All but the last must be self-delimiting, and a data packet may only come last: ffmpeg's
    ``ff_rdt_parse_header`` and Wireshark both take everything after a data packet's header as
    its payload (status packets precede data, as rdt.c's comment says).
    """
    plist = list(packets)
    if not plist:
        raise LocalProtocolError("an RDT datagram needs at least one packet")
    for p in plist[:-1]:
        if isinstance(p, RdtData):
            raise LocalProtocolError("a data packet must be the last packet of a datagram")
        if not _self_delimiting(p):
            raise LocalProtocolError(f"{type(p).__name__} cannot be followed by another packet")
    return b"".join(build_rdt(p) for p in plist)


def build_data_packet(
    set_id: int,
    seq: int,
    timestamp: int,
    payload: bytes,
    *,
    stream_id: int = 0,
    keyframe: bool = True,
    total_reliable: int | None = 0,
    length_included: bool = False,
    is_reliable: bool = False,
    back_to_back: bool = False,
) -> bytes:
    """A data packet as PEERS.md item 6 describes it (byte 0 = 0x40 | set_id << 1 by default)."""
    rule = (stream_id << 1) | (not keyframe)
    return _build_data(
        RdtData(
            set_id=set_id,
            seq=seq,
            asm_rule=rule,
            timestamp=timestamp,
            payload=payload,
            total_reliable=total_reliable,
            is_reliable=is_reliable,
            back_to_back=back_to_back,
            length_included=length_included,
        )
    )


def build_stream_end(
    stream_id: int,
    seq: int,
    timestamp: int,
    *,
    total_reliable: int | None = None,
    packet_sent: bool = True,
    reason: StreamEndReason | None = None,
) -> bytes:
    """Stream end: ``seq`` is the sequence number the next data packet would have had."""
    return build_rdt(RdtStreamEnd(stream_id, seq, timestamp, total_reliable, packet_sent, reason))


def build_asm_action(
    stream_id: int, reliable_seq: int, data: bytes = b"", *, length_included: bool = False
) -> bytes:
    """ASM action packet."""
    return build_rdt(RdtAsmAction(stream_id, reliable_seq, data, length_included))


def build_bandwidth_report(
    interval: int, bandwidth: int, sequence: int, *, length_included: bool = False
) -> bytes:
    """Bandwidth report (what a client sends)."""
    return build_rdt(RdtBandwidthReport(interval, bandwidth, sequence, length_included))


def build_rtt_request() -> bytes:
    """RTT request (three bytes)."""
    return build_rdt(RdtRttRequest())


def build_rtt_response(ts_sec: int, ts_usec: int) -> bytes:
    """RTT response carrying our clock."""
    return build_rdt(RdtRttResponse(ts_sec, ts_usec))


def build_latency_report(server_out_time: int, *, length_included: bool = False) -> bytes:
    """Latency report (server send time in ms)."""
    return build_rdt(RdtLatencyReport(server_out_time, length_included))


# --------------------------------------------------------------------------------------------
# hot path
# --------------------------------------------------------------------------------------------

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")


def _data_fields(data: bytes) -> tuple[int, int, int, int, int]:
    """(set_id, seq, asm_rule, timestamp, payload offset) of a data packet, checked."""
    n = len(data)
    if n < 8:
        raise RealProtocolError(f"RDT data packet of {n} bytes is too short")
    b0 = data[0]
    seq = (data[1] << 8) | data[2]
    if seq >= _FIRST_CONTROL:
        raise RealProtocolError(f"RDT packet type 0x{seq:04x} is not a data packet")
    pos = 3
    length = n
    if b0 & 0x80:
        length = (data[3] << 8) | data[4]
        pos = 5
        if n < 10:
            raise RealProtocolError(f"RDT data packet of {n} bytes is too short")
    rule = data[pos] & 0x3F
    ts = _U32.unpack_from(data, pos + 1)[0]
    pos += 5
    set_id = (b0 >> 1) & 0x1F
    if set_id == 31:
        if n < pos + 2:
            raise RealProtocolError("RDT data packet ends inside its set id expansion")
        set_id = _U16.unpack_from(data, pos)[0]
        pos += 2
    if b0 & 0x40:
        pos += 2
    if rule == 63:
        if n < pos + 2:
            raise RealProtocolError("RDT data packet ends inside its ASM rule expansion")
        rule = _U16.unpack_from(data, pos)[0]
        pos += 2
    if pos > n:
        raise RealProtocolError("RDT data packet ends inside its header")
    if length != n and b0 & 0x80:
        raise RealProtocolError(f"RDT data packet declares length {length}, has {n} bytes")
    return set_id, seq, rule, ts, pos


def rdt_data_header(data: bytes) -> tuple[int, int, int, bool, int]:
    """(set_id, seq, stream_id, keyframe, timestamp) of one complete data packet.

    The routing fields the proxy needs per packet, without building any objects; agrees with
    :func:`parse_rdt` (hypothesis-tested).
    """
    set_id, seq, rule, ts, _ = _data_fields(data)
    return set_id, seq, rule >> 1, not rule & 1, ts


def rdt_data_payload_offset(data: bytes) -> int:
    """Where the payload (the .rm packet data) of one complete data packet starts."""
    return _data_fields(data)[4]


def rewrite_rdt_data(data: bytes, *, set_id: int | None = None, seq: int | None = None) -> bytes:
    """Copy of a data packet with a new set id and/or sequence number, rest untouched.

    Patches the header bytes in place when the header keeps its size (both set ids below 31),
    otherwise rebuilds the packet.
    """
    old_set, _, _, _, _ = _data_fields(data)
    if seq is not None and not 0 <= seq < _FIRST_CONTROL:
        raise LocalProtocolError(f"RDT data sequence {seq} is not below 0xFF00")
    if set_id is not None and (set_id >= 31 or old_set >= 31) and set_id != old_set:
        (pkt,) = parse_rdt(data)
        assert isinstance(pkt, RdtData)
        pkt = replace(pkt, set_id=set_id, seq=pkt.seq if seq is None else seq)
        return build_rdt(pkt)
    if set_id is not None and set_id < 0:
        raise LocalProtocolError(f"RDT set id {set_id} is negative")
    out = bytearray(data)
    if set_id is not None and set_id < 31:
        out[0] = (out[0] & 0xC1) | (set_id << 1)
    if seq is not None:
        out[1] = seq >> 8
        out[2] = seq & 0xFF
    return bytes(out)
