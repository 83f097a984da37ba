"""MMS over TCP (MMST) and UDP (MMSU): command packets, data packets and a sans-I/O framer.

Sources, in order of authority: Microsoft's [MS-MMSP] (message layouts and names), what the two
open clients actually send and read (libavformat ``mmst.c``, VLC ``modules/access/mms/mmstu.c``),
and Wireshark's ``msmms`` dissector as an independent reader.

Theory of operation
-------------------
One TCP connection (port 1755) carries two kinds of packets, told apart by bytes 4..8:

* **Command packets** ([MS-MMSP] ``TcpMessageHeader`` + one MMS message), all little-endian::

      0  rep=1, version=0, versionMinor=0, padding        (4 x u8)
      4  sessionId 0xB00BFACE                              (u32)
      8  messageLength = total length - 16                 (u32)
     12  seal "MMS "                                       (4 bytes)
     16  chunkCount = messageLength / 8                    (u32)
     20  seq                                               (u32; the spec: u16 seq + u16 zero)
     24  timeSent                                          (f64 seconds, as Wireshark reads it)
     32  chunkLen = chunkCount - 2                         (u32, the 8-byte chunks from here on)
     36  MID: message id | direction << 16                 (u16 + u16, 3 = to server, 4 = to client)
     40  message body, zero-padded to a multiple of 8

  What ffmpeg and VLC call "prefix1" and "prefix2" are the body's first two u32 fields. In a reply
  the first is ``hr`` (an HRESULT): ffmpeg gives up on any reply whose ``hr`` is not 0.

* **Data packets** (no signature): u32 LocationId (the ASF packet number, or the index of a
  header part), u8 playIncarnation (the "packet id": 2 for the ASF header, else the id the
  client chose in StartPlaying), u8 AFFlags, u16 length including these 8 bytes, payload. Over
  MMSU the same packets travel one per UDP datagram (commands stay on TCP).

The typed layer: each message is a frozen dataclass subclass of :class:`MmsCommand` whose fields
carry the [MS-MMSP] names in snake case; :func:`parse_command` and :func:`build_command` convert
one complete command packet; :class:`MmsStreamReader` cuts a TCP byte stream into packets first,
because construct is not incremental.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Final

from construct import (
    Adapter,
    Array,
    Bytes,
    Computed,
    Const,
    Construct,
    ConstructError,
    Default,
    Enum,
    FixedSized,
    Float64l,
    GreedyBytes,
    IfThenElse,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Optional,
    Padding,
    Rebuild,
    Struct,
    Terminated,
    len_,
    this,
)

from mediacache.errors import LocalProtocolError
from mediacache_wmt.errors import MmsProtocolError

__all__ = [
    "COMMAND_HEADER_SIZE",
    "DATA_PACKET_HEADER_SIZE",
    "HEADER_PACKET_ID",
    "MAX_COMMAND_SIZE",
    "MMS_PORT",
    "SESSION_ID",
    "Acceleration",
    "CloseFile",
    "Connect",
    "ConnectFunnel",
    "DataFlags",
    "Direction",
    "FileAttributes",
    "FunnelInfo",
    "HResult",
    "Logging",
    "MessageId",
    "MmsCommand",
    "MmsDataPacket",
    "MmsStreamReader",
    "OpenFile",
    "Ping",
    "Pong",
    "ReadBlock",
    "ReportConnectedEx",
    "ReportConnectedFunnel",
    "ReportDisconnectedFunnel",
    "ReportEndOfStream",
    "ReportFunnelInfo",
    "ReportOpenFile",
    "ReportReadBlock",
    "ReportRedirect",
    "ReportStartStriding",
    "ReportStartedPlaying",
    "ReportStreamChange",
    "ReportStreamSwitch",
    "SecurityChallenge",
    "SecurityResponse",
    "StartPlaying",
    "StartStriding",
    "StopPlaying",
    "StreamSwitch",
    "StreamSwitchEntry",
    "Thinning",
    "UnknownCommand",
    "build_command",
    "build_data_packet",
    "data_packet_header",
    "file_blocks_for",
    "header_packets",
    "is_command",
    "parse_command",
    "parse_data_packet",
    "restamp_data_packet",
]

MMS_PORT: Final = 1755
SESSION_ID: Final = 0xB00BFACE
SEAL: Final = b"MMS "
COMMAND_HEADER_SIZE: Final = 40  # up to and including the MID; the body starts here
DATA_PACKET_HEADER_SIZE: Final = 8
HEADER_PACKET_ID: Final = 2  # playIncarnation of ASF header parts, ffmpeg's and VLC's default
MAX_COMMAND_SIZE: Final = 1 << 20  # a guard, not a protocol limit: real commands are < 2 KiB
_SIGNATURE: Final = SESSION_ID.to_bytes(4, "little")


class Direction(enum.IntEnum):
    """The high half of a MID."""

    TO_SERVER = 0x0003
    TO_CLIENT = 0x0004


class MessageId(enum.IntEnum):
    """Every MID of [MS-MMSP] 2.2.4 (direction in the high 16 bits).

    ffmpeg's names in brackets where they differ. There is no client-to-server 0x03: Wireshark's
    "protocol selection error" to the server is a copy of the server-side entry.
    """

    # client -> server (LinkViewerToMac...)
    CONNECT = 0x00030001  # [CS_PKT_INITIAL]
    CONNECT_FUNNEL = 0x00030002  # [CS_PKT_PROTOCOL_SELECT]
    OPEN_FILE = 0x00030005  # [CS_PKT_MEDIA_FILE_REQUEST]
    START_PLAYING = 0x00030007  # [CS_PKT_START_FROM_PKT_ID]
    STOP_PLAYING = 0x00030009  # [CS_PKT_STREAM_PAUSE]
    CLOSE_FILE = 0x0003000D  # [CS_PKT_STREAM_CLOSE]
    READ_BLOCK = 0x00030015  # [CS_PKT_MEDIA_HEADER_REQUEST]
    FUNNEL_INFO = 0x00030018  # [CS_PKT_TIMING_DATA_REQUEST]
    SECURITY_RESPONSE = 0x0003001A  # [CS_PKT_USER_PASSWORD]
    PONG = 0x0003001B  # [CS_PKT_KEEPALIVE]
    START_STRIDING = 0x00030028
    LOGGING = 0x00030032
    STREAM_SWITCH = 0x00030033  # [CS_PKT_STREAM_ID_REQUEST]
    # server -> client (LinkMacToViewer...)
    REPORT_CONNECTED_EX = 0x00040001  # [SC_PKT_CLIENT_ACCEPTED]
    REPORT_CONNECTED_FUNNEL = 0x00040002  # [SC_PKT_PROTOCOL_ACCEPTED]
    REPORT_DISCONNECTED_FUNNEL = 0x00040003  # [SC_PKT_PROTOCOL_FAILED]
    REPORT_STARTED_PLAYING = 0x00040005  # [SC_PKT_MEDIA_PKT_FOLLOWS]
    REPORT_OPEN_FILE = 0x00040006  # [SC_PKT_MEDIA_FILE_DETAILS]
    REPORT_START_STRIDING = 0x0004000A
    REPORT_READ_BLOCK = 0x00040011  # [SC_PKT_HEADER_REQUEST_ACCEPTED]
    REPORT_FUNNEL_INFO = 0x00040015  # [SC_PKT_TIMING_TEST_REPLY]
    SECURITY_CHALLENGE = 0x0004001A  # [SC_PKT_PASSWORD_REQUIRED]
    PING = 0x0004001B  # [SC_PKT_KEEPALIVE]
    REPORT_END_OF_STREAM = 0x0004001E  # [SC_PKT_STREAM_STOPPED]
    REPORT_STREAM_CHANGE = 0x00040020  # [SC_PKT_STREAM_CHANGING]
    REPORT_STREAM_SWITCH = 0x00040021  # [SC_PKT_STREAM_ID_ACCEPTED]
    REPORT_REDIRECT = 0x00040022


class Thinning(enum.IntEnum):
    """wThinningLevel of a StreamSwitch entry: what the server sends of that stream."""

    ALL = 0
    KEY_FRAMES = 1
    OFF = 2


class FileAttributes(enum.IntFlag):
    """fileAttributes of ReportOpenFile.

    VLC treats ``attributes >> 24 == 0x02`` as a live broadcast (not seekable); Wireshark shows
    byte 2 (0x80: stridable) and byte 3 (0x01 pre-recorded, 0x02 live) of this field.
    """

    CAN_STRIDE = 0x00800000
    CAN_SEEK = 0x01000000
    BROADCAST = 0x02000000
    LIVE = 0x04000000
    PLAYLIST = 0x40000000


class HResult(enum.IntEnum):
    """HRESULTs a server puts in ``hr`` (the list Wireshark's dissector knows)."""

    OK = 0x00000000
    END_WITH_STREAM_CHANGE = 0x00000001  # ReportEndOfStream only: a ReportStreamChange follows
    FILE_NOT_FOUND = 0xC00D001A
    NETWORK_BUSY = 0xC00D000E
    TOO_MANY_SESSIONS = 0xC00D000F
    CONNECTION_LOST = 0xC00D0029
    NO_MORE_DATA = 0xC00D0034
    TIMEOUT = 0xC00D0013
    ACCESS_DENIED = 0x80070005
    NOT_IMPLEMENTED = 0x80004001  # E_NOTIMPL: a request this server does not support
    INVALID_ARGUMENT = 0x80070057
    UNEXPECTED = 0x8000FFFF


class DataFlags(enum.IntFlag):
    """AFFlags of a data packet carrying part of the ASF header (over TCP).

    ffmpeg keeps reading header parts only while the flags are exactly 0x04 and then insists on
    0x08 or 0x0C, so every part but the last is 0x04 (Wireshark's "0x00 = middle" would stop
    ffmpeg). For ASF data packets the spec puts the low 8 bits of a packet counter here.
    """

    MORE = 0x04
    LAST = 0x08
    ONLY = 0x0C


def _align8(n: int) -> int:
    return (n + 7) & ~7


# --- construct helpers: UTF-16LE text -------------------------------------------------------


def _nul16(data: bytes) -> int:
    """Index of the first 2-byte-aligned UTF-16 NUL, or the (even) length."""
    i = data.find(b"\x00\x00")
    while i != -1 and i % 2:
        i = data.find(b"\x00\x00", i + 1)
    return i if i != -1 else len(data) & ~1


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-le", "surrogatepass")


def _wchars(text: str) -> int:
    """Length in WCHARs with the terminating NUL, 0 for an empty string ([MS-MMSP] cb fields)."""
    return len(_utf16(text)) // 2 + 1 if text else 0


class _Utf16z(Adapter):  # type: ignore[misc]
    """NUL-terminated UTF-16LE text; what follows the NUL (padding) is ignored."""

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        return obj[: _nul16(obj)].decode("utf-16-le", "surrogatepass")

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return _utf16(obj) + b"\x00\x00"


class _Utf16Counted(Adapter):  # type: ignore[misc]
    """UTF-16LE text of a counted size that includes one NUL; empty text takes no bytes."""

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        text = obj.decode("utf-16-le", "surrogatepass")
        return text[:-1] if text.endswith("\x00") else text

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return _utf16(obj) + b"\x00\x00" if obj else b""


def _cb_bytes(text: str) -> int:
    return 2 * _wchars(text)


# --- construct declarations: the command packet ---------------------------------------------

COMMAND_PACKET = Struct(
    "rep" / Const(b"\x01"),
    "version" / Default(Int8ul, 0),
    "version_minor" / Default(Int8ul, 0),
    "padding" / Default(Int8ul, 0),
    "session_id" / Const(SESSION_ID, Int32ul),
    "message_length" / Rebuild(Int32ul, lambda ctx: 24 + _align8(len(ctx.body))),
    "seal" / Const(SEAL),
    "chunk_count" / Rebuild(Int32ul, this.message_length // 8),
    "sequence" / Int32ul,
    "timestamp" / Float64l,
    "chunk_len" / Rebuild(Int32ul, this.chunk_count - 2),
    "mid" / Enum(Int32ul, MessageId),
    # built from the unpadded body, FixedSized adds the zero padding to a multiple of 8
    "body" / FixedSized(this.message_length - 24, GreedyBytes),
    Terminated,
)
"""One command packet. ``body`` is the MMS message after the MID, padding included on parse."""

# --- construct declarations: message bodies ([MS-MMSP] 2.2.4, in body order) ----------------

CONNECT = Struct(
    "play_incarnation" / Int32ul,
    "mac_to_viewer_protocol_revision" / Int32ul,
    "viewer_to_mac_protocol_revision" / Int32ul,
    "subscriber_name" / _Utf16z(GreedyBytes),
)
FUNNEL_INFO = Struct("play_incarnation" / Int32ul, "spare" / Int32ul)
CONNECT_FUNNEL = Struct(
    "play_incarnation" / Int32ul,
    "max_block_bytes" / Int32ul,
    "max_funnel_bytes" / Int32ul,
    "max_bit_rate" / Int32ul,
    "funnel_mode" / Int32ul,
    "funnel_name" / _Utf16z(GreedyBytes),
)
OPEN_FILE = Struct(
    "play_incarnation" / Int32ul,
    "spare" / Int32ul,
    # token: offset of tokenData from the start of fileName (0 when there is no token)
    "token" / Rebuild(Int32ul, lambda ctx: len(_utf16(ctx.file_name)) + 2 if ctx.token_data else 0),
    "cbtoken" / Rebuild(Int32ul, len_(this.token_data)),
    "file_name" / IfThenElse(this.cbtoken > 0, _Utf16z(Bytes(this.token)), _Utf16z(GreedyBytes)),
    "token_data" / IfThenElse(this.cbtoken > 0, Bytes(this.cbtoken), Computed(b"")),
)
READ_BLOCK = Struct(
    "open_file_id" / Int32ul,
    "file_block_id" / Int32ul,
    "offset" / Int32ul,
    "length" / Int32ul,
    "flags" / Int32ul,
    "padding" / Int32ul,
    "t_earliest" / Float64l,
    "t_deadline" / Float64l,
    "play_incarnation" / Int32ul,
    "play_sequence" / Int32ul,
)
STREAM_SWITCH_ENTRY = Struct("src" / Int16ul, "dst" / Int16ul, "thinning" / Int16ul)
STREAM_SWITCH = Struct(
    "count" / Rebuild(Int32ul, len_(this.entries)),
    "entries" / Array(this.count, STREAM_SWITCH_ENTRY),
)
_ACCELERATION = Struct(
    "bandwidth" / Int32ul, "duration" / Int32ul, "link_bandwidth" / Int32ul
)
_PLAY_FROM = Struct(
    "open_file_id" / Int32ul,
    "padding" / Int32ul,
    "position" / Float64l,
    "asf_offset" / Int32ul,
    "location_id" / Int32ul,
    "frame_offset" / Int32ul,
    "play_incarnation" / Int32ul,  # at byte 68 of the command: the packet id of the data
)
START_PLAYING = Struct(
    *_PLAY_FROM.subcons,
    "acceleration" / Optional(_ACCELERATION),  # dwAccelBandwidth etc., from WMP 9 on
)
START_STRIDING = Struct(*_PLAY_FROM.subcons, "rate" / Float64l)
STOP_PLAYING = Struct("open_file_id" / Int32ul, "play_incarnation" / Int32ul)
CLOSE_FILE = Struct("play_incarnation" / Int32ul, "open_file_id" / Int32ul)
PING_PONG = Struct("param1" / Int32ul, "param2" / Int32ul)
SECURITY_TOKEN = Struct(
    "play_incarnation" / Int32ul,
    "cookie" / Int32ul,
    "cb_token" / Rebuild(Int32ul, len_(this.token)),
    "token" / Bytes(this.cb_token),
)
LOGGING = Struct("log" / GreedyBytes)

REPORT_CONNECTED_EX = Struct(
    "hr" / Int32ul,
    "play_incarnation" / Int32ul,
    "mac_to_viewer_protocol_revision" / Int32ul,
    "viewer_to_mac_protocol_revision" / Int32ul,
    "block_group_play_time" / Float64l,
    "block_group_blocks" / Int32ul,
    "max_open_files" / Int32ul,
    "block_max_bytes" / Int32ul,
    "max_bit_rate" / Int32ul,
    # sizes in WCHARs, terminating NUL included (VLC reads them at byte 80 of the command)
    "cb_server_version_info" / Rebuild(Int32ul, lambda ctx: _wchars(ctx.server_version_info)),
    "cb_version_info" / Rebuild(Int32ul, lambda ctx: _wchars(ctx.version_info)),
    "cb_version_url" / Rebuild(Int32ul, lambda ctx: _wchars(ctx.version_url)),
    "cb_authen_package" / Rebuild(Int32ul, lambda ctx: _wchars(ctx.authen_package)),
    "server_version_info" / _Utf16Counted(Bytes(this.cb_server_version_info * 2)),
    "version_info" / _Utf16Counted(Bytes(this.cb_version_info * 2)),
    "version_url" / _Utf16Counted(Bytes(this.cb_version_url * 2)),
    "authen_package" / _Utf16Counted(Bytes(this.cb_authen_package * 2)),
)
REPORT_CONNECTED_FUNNEL = Struct(
    "hr" / Int32ul,
    "play_incarnation" / Int32ul,
    "packet_payload_size" / Int32ul,
    "funnel_name" / _Utf16z(GreedyBytes),
)
HR_INCARNATION = Struct("hr" / Int32ul, "play_incarnation" / Int32ul)
REPORT_FUNNEL_INFO = Struct(
    "hr" / Int32ul,
    "play_incarnation" / Int32ul,
    "transport_mask" / Int32ul,
    "block_fragments" / Int32ul,
    "fragment_bytes" / Int32ul,
    "client_id" / Int32ul,  # nCubs: the id the client puts in RequestPacketListResend
    "failed_cubs" / Int32ul,
    "disks" / Int32ul,
    "decluster" / Int32ul,
    "datagram_size" / Int32ul,
    "packet_pair" / GreedyBytes,
)
REPORT_OPEN_FILE = Struct(
    "hr" / Int32ul,
    "play_incarnation" / Int32ul,
    "open_file_id" / Int32ul,  # VLC's "+0": 1 = file accepted, 2 = authentication accepted
    "padding" / Int32ul,
    "file_name" / Int32ul,
    "file_attributes" / Int32ul,  # VLC's "+12"
    "file_duration" / Float64l,  # seconds
    "file_blocks" / Int32ul,  # VLC's "+24", which it logs as the media length in seconds
    Padding(16),
    "file_packet_size" / Int32ul,  # VLC's "+44"
    "file_packet_count" / Int64ul,  # VLC's "+48" (low half)
    "file_bit_rate" / Int32ul,  # VLC's "+56"
    "file_header_size" / Int32ul,  # VLC's "+60": header object + 50-byte data object header
    Padding(36),
)
REPORT_READ_BLOCK = Struct(
    "hr" / Int32ul, "play_incarnation" / Int32ul, "play_sequence" / Int32ul
)
REPORT_STARTED_PLAYING = Struct(
    "hr" / Int32ul,
    "play_incarnation" / Int32ul,
    "tiger_file_id" / Int32ul,
    "unused1" / Int32ul,
    Padding(12),
)
REPORT_START_STRIDING = Struct(
    "hr" / Int32ul, "play_incarnation" / Int32ul, "spare" / Int32ul
)
REPORT_STREAM_CHANGE = Struct(
    "hr" / Int32ul,
    "tcp_hdr_incarnation" / Int32ul,
    "packet_size" / Int32ul,
    "header_size" / Int32ul,
    "bit_rate" / Int32ul,
    "stream_id" / Int32ul,
)
REPORT_STREAM_SWITCH = Struct("hr" / Int32ul)
REPORT_REDIRECT = Struct(
    "hr" / Int32ul,
    "redirect_type" / Int16ul,  # 1 = another URL, 2 = another proxy
    "cb_location" / Rebuild(Int16ul, lambda ctx: _cb_bytes(ctx.location)),  # bytes, NUL incl.
    "location" / _Utf16Counted(Bytes(this.cb_location)),
)

DATA_PACKET = Struct(
    "sequence" / Int32ul,  # [MS-MMSP] LocationId
    "packet_id" / Int8ul,  # [MS-MMSP] playIncarnation (low 8 bits)
    "flags" / Int8ul,  # [MS-MMSP] AFFlags
    "length" / Rebuild(Int16ul, len_(this.payload) + DATA_PACKET_HEADER_SIZE),
    "payload" / Bytes(this.length - DATA_PACKET_HEADER_SIZE),
)
"""One data packet (the 8-byte pre-header and its payload)."""

_DATA_HEADER = struct.Struct("<IBBH")  # the hot-path twin of DATA_PACKET's first four fields


# --- typed commands ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MmsCommand:
    """Base of every MMS message; ``MID`` names the message, the fields are its body."""

    MID: ClassVar[int]

    @property
    def direction(self) -> Direction:
        """Who sends this message: the high half of the MID."""
        return Direction(self.MID >> 16)


@dataclass(frozen=True, slots=True)
class Connect(MmsCommand):
    """LinkViewerToMacConnect (0x01): the first thing a player says; answered by 0x01.

    ``subscriber_name`` is e.g. ``NSPlayer/7.0.0.1956; {client GUID}; Host: origin.example``.
    """

    MID: ClassVar[int] = MessageId.CONNECT
    subscriber_name: str
    play_incarnation: int = 0xF0F0F0EF  # no packet-pair bandwidth test (ffmpeg sends 0)
    mac_to_viewer_protocol_revision: int = 0x0004000B
    viewer_to_mac_protocol_revision: int = 0x0003001C


@dataclass(frozen=True, slots=True)
class FunnelInfo(MmsCommand):
    """LinkViewerToMacFunnelInfo (0x18): ffmpeg's "timing data request"; answered by 0x15."""

    MID: ClassVar[int] = MessageId.FUNNEL_INFO
    play_incarnation: int = 0xF0F0F0EF
    spare: int = 0  # the spec ends the message here; ffmpeg sends 0x0004000B


@dataclass(frozen=True, slots=True)
class ConnectFunnel(MmsCommand):
    r"""LinkViewerToMacConnectFunnel (0x02): protocol selection, ``\\ip\TCP\port`` or UDP.

    Answered by 0x02 (accepted) or 0x03 (refused). Servers ignore the address and send UDP to
    the address of the TCP connection. VLC always names UDP port 7000 here.
    """

    MID: ClassVar[int] = MessageId.CONNECT_FUNNEL
    funnel_name: str
    play_incarnation: int = 0
    max_block_bytes: int = 0xFFFFFFFF
    max_funnel_bytes: int = 0
    max_bit_rate: int = 0x00989680
    funnel_mode: int = 2

    @classmethod
    def for_transport(cls, address: str, transport: str, port: int) -> ConnectFunnel:
        """The request for data over ``transport`` ("TCP" or "UDP") to ``address:port``."""
        return cls(funnel_name=f"\\\\{address}\\{transport.upper()}\\{port}")

    @property
    def transport(self) -> tuple[str, str, int] | None:
        """``(address, "TCP" | "UDP", port)`` from the funnel name, None if it does not parse."""
        parts = self.funnel_name.split("\\")
        if len(parts) != 5 or parts[:2] != ["", ""] or parts[3].upper() not in ("TCP", "UDP"):
            return None
        if not parts[4].isdigit() or not 0 < int(parts[4]) < 65536:
            return None
        return parts[2], parts[3].upper(), int(parts[4])


@dataclass(frozen=True, slots=True)
class OpenFile(MmsCommand):
    """LinkViewerToMacOpenFile (0x05): the path of the clip, answered by 0x06 (or 0x1A)."""

    MID: ClassVar[int] = MessageId.OPEN_FILE
    file_name: str
    play_incarnation: int = 1
    spare: int = 0  # ffmpeg and VLC send 0xFFFFFFFF
    token_data: bytes = b""  # credentials when the player sends them unasked


@dataclass(frozen=True, slots=True)
class ReadBlock(MmsCommand):
    """LinkViewerToMacReadBlock (0x15): header request; answered by 0x11, then the header.

    ``play_incarnation`` becomes the packet id of the header's data packets (2 by custom).
    """

    MID: ClassVar[int] = MessageId.READ_BLOCK
    open_file_id: int = 1
    file_block_id: int = 0
    offset: int = 0
    length: int = 0x8000
    flags: int = 0xFFFFFFFF
    padding: int = 0
    t_earliest: float = 0.0
    t_deadline: float = 3600.0
    play_incarnation: int = HEADER_PACKET_ID
    play_sequence: int = 0


@dataclass(frozen=True, slots=True)
class StreamSwitchEntry:
    """One STREAM_SWITCH_ENTRY: send ``dst`` at ``thinning`` (instead of ``src``)."""

    dst: int
    thinning: int = Thinning.ALL
    src: int = 0xFFFF  # 0xFFFF: replaces nothing


@dataclass(frozen=True, slots=True)
class StreamSwitch(MmsCommand):
    """LinkViewerToMacStreamSwitch (0x33): stream selection; answered by 0x21.

    This is Intelligent Streaming: a player lists every stream with ``Thinning.ALL`` or
    ``Thinning.OFF`` (VLC) or all of them at ``ALL`` (ffmpeg).
    """

    MID: ClassVar[int] = MessageId.STREAM_SWITCH
    entries: tuple[StreamSwitchEntry, ...] = ()

    @classmethod
    def select(cls, streams: Mapping[int, int] | Iterable[int]) -> StreamSwitch:
        """Entries for stream numbers (all frames) or a {stream number: thinning} map."""
        items = streams.items() if isinstance(streams, Mapping) else ((s, 0) for s in streams)
        return cls(tuple(StreamSwitchEntry(dst, Thinning(t)) for dst, t in items))

    @property
    def selected(self) -> frozenset[int]:
        """Stream numbers the player wants data of (thinning not OFF)."""
        return frozenset(e.dst for e in self.entries if e.thinning != Thinning.OFF)


@dataclass(frozen=True, slots=True)
class Acceleration:
    """The optional tail of StartPlaying: send ``duration`` ms faster, at ``bandwidth`` b/s."""

    bandwidth: int
    duration: int
    link_bandwidth: int


@dataclass(frozen=True, slots=True)
class StartPlaying(MmsCommand):
    """LinkViewerToMacStartPlaying (0x07): answered by 0x05, then the data packets.

    Start point: ``position`` in seconds (ffmpeg and VLC send 0.0), else ``asf_offset`` or
    ``location_id`` (ASF packet number; 0xFFFFFFFF = unused). ``play_incarnation`` (byte 68 of
    the command) is the packet id the data will carry.
    """

    MID: ClassVar[int] = MessageId.START_PLAYING
    play_incarnation: int = 4
    open_file_id: int = 1
    padding: int = 0  # ffmpeg and VLC send 0x0001FFFF
    position: float = 0.0
    asf_offset: int = 0xFFFFFFFF
    location_id: int = 0xFFFFFFFF
    frame_offset: int = 0x00FFFFFF  # the end point; ffmpeg and VLC send 0x00FFFFFF (no limit)
    acceleration: Acceleration | None = None

    @property
    def packet_id(self) -> int:
        """The data packets' packet id (low 8 bits of ``play_incarnation``)."""
        return self.play_incarnation & 0xFF


@dataclass(frozen=True, slots=True)
class StartStriding(MmsCommand):
    """LinkViewerToMacStartStriding (0x28): fast forward / rewind at ``rate``."""

    MID: ClassVar[int] = MessageId.START_STRIDING
    rate: float
    play_incarnation: int = 4
    open_file_id: int = 1
    padding: int = 0
    position: float = 0.0
    asf_offset: int = 0xFFFFFFFF
    location_id: int = 0xFFFFFFFF
    frame_offset: int = 0x00FFFFFF


@dataclass(frozen=True, slots=True)
class StopPlaying(MmsCommand):
    """LinkViewerToMacStopPlaying (0x09): pause; answered by 0x1E."""

    MID: ClassVar[int] = MessageId.STOP_PLAYING
    open_file_id: int = 1
    play_incarnation: int = 4


@dataclass(frozen=True, slots=True)
class CloseFile(MmsCommand):
    """LinkViewerToMacCloseFile (0x0D): the player leaves (no answer)."""

    MID: ClassVar[int] = MessageId.CLOSE_FILE
    play_incarnation: int = 0  # ffmpeg and VLC send 1
    open_file_id: int = 1


@dataclass(frozen=True, slots=True)
class Pong(MmsCommand):
    """LinkViewerToMacPong (0x1B): the keep-alive answer to a Ping."""

    MID: ClassVar[int] = MessageId.PONG
    param1: int = 0
    param2: int = 0


@dataclass(frozen=True, slots=True)
class SecurityResponse(MmsCommand):
    """LinkViewerToMacSecurityResponse (0x1A): credentials (Basic: NUL-terminated ASCII)."""

    MID: ClassVar[int] = MessageId.SECURITY_RESPONSE
    token: bytes
    play_incarnation: int = 1
    cookie: int = 0


@dataclass(frozen=True, slots=True)
class Logging(MmsCommand):
    """LinkViewerToMacLogging (0x32): the player's CLIENT_LOG, kept as bytes (with padding)."""

    MID: ClassVar[int] = MessageId.LOGGING
    log: bytes = b""


@dataclass(frozen=True, slots=True)
class ReportConnectedEx(MmsCommand):
    """LinkMacToViewerReportConnectedEX (0x01): the server's hello.

    ``authen_package`` "BASIC" or "NTLM" announces that opening files may need credentials.
    """

    MID: ClassVar[int] = MessageId.REPORT_CONNECTED_EX
    hr: int = 0
    play_incarnation: int = 0xF0F0F0EF
    mac_to_viewer_protocol_revision: int = 0x0004000B
    viewer_to_mac_protocol_revision: int = 0x0003001C
    block_group_play_time: float = 1.0
    block_group_blocks: int = 1
    max_open_files: int = 1
    block_max_bytes: int = 0x8000
    max_bit_rate: int = 0x00989680
    server_version_info: str = "4.1.0.3928"
    version_info: str = ""
    version_url: str = ""
    authen_package: str = ""


@dataclass(frozen=True, slots=True)
class ReportConnectedFunnel(MmsCommand):
    """LinkMacToViewerReportConnectedFunnel (0x02): protocol selection accepted."""

    MID: ClassVar[int] = MessageId.REPORT_CONNECTED_FUNNEL
    hr: int = 0
    play_incarnation: int = 0
    packet_payload_size: int = 0
    funnel_name: str = "Funnel Of The Gods"


@dataclass(frozen=True, slots=True)
class ReportDisconnectedFunnel(MmsCommand):
    """LinkMacToViewerReportDisconnectedFunnel (0x03): protocol selection refused."""

    MID: ClassVar[int] = MessageId.REPORT_DISCONNECTED_FUNNEL
    hr: int = HResult.UNEXPECTED
    play_incarnation: int = 0


@dataclass(frozen=True, slots=True)
class ReportFunnelInfo(MmsCommand):
    """LinkMacToViewerReportFunnelInfo (0x15): answer to 0x18, with the client id."""

    MID: ClassVar[int] = MessageId.REPORT_FUNNEL_INFO
    hr: int = 0
    play_incarnation: int = 0xF0F0F0EF
    transport_mask: int = 0x00000008
    block_fragments: int = 1
    fragment_bytes: int = 0x00010000
    client_id: int = 0
    failed_cubs: int = 0
    disks: int = 1
    decluster: int = 0
    datagram_size: int = 0
    packet_pair: bytes = b""


@dataclass(frozen=True, slots=True)
class ReportOpenFile(MmsCommand):
    """LinkMacToViewerReportOpenFile (0x06): what the player needs to know about the clip."""

    MID: ClassVar[int] = MessageId.REPORT_OPEN_FILE
    hr: int = 0
    play_incarnation: int = 1
    open_file_id: int = 1
    padding: int = 0
    file_name: int = 0
    file_attributes: int = FileAttributes.CAN_SEEK
    file_duration: float = 0.0
    file_blocks: int = 0
    file_packet_size: int = 0
    file_packet_count: int = 0
    file_bit_rate: int = 0
    file_header_size: int = 0

    @property
    def is_broadcast(self) -> bool:
        """A live broadcast (VLC: not seekable, no size)."""
        return bool(self.file_attributes & FileAttributes.BROADCAST)


@dataclass(frozen=True, slots=True)
class ReportReadBlock(MmsCommand):
    """LinkMacToViewerReportReadBlock (0x11): the header data packets follow."""

    MID: ClassVar[int] = MessageId.REPORT_READ_BLOCK
    hr: int = 0
    play_incarnation: int = HEADER_PACKET_ID
    play_sequence: int = 0


@dataclass(frozen=True, slots=True)
class ReportStreamSwitch(MmsCommand):
    """LinkMacToViewerReportStreamSwitch (0x21): stream selection done."""

    MID: ClassVar[int] = MessageId.REPORT_STREAM_SWITCH
    hr: int = 0


@dataclass(frozen=True, slots=True)
class ReportStartedPlaying(MmsCommand):
    """LinkMacToViewerReportStartedPlaying (0x05): the data packets follow."""

    MID: ClassVar[int] = MessageId.REPORT_STARTED_PLAYING
    hr: int = 0
    play_incarnation: int = 4
    tiger_file_id: int = 1
    unused1: int = 0


@dataclass(frozen=True, slots=True)
class ReportStartStriding(MmsCommand):
    """LinkMacToViewerReportStartStriding (0x0A): answer to 0x28."""

    MID: ClassVar[int] = MessageId.REPORT_START_STRIDING
    hr: int = 0
    play_incarnation: int = 4
    spare: int = 0


@dataclass(frozen=True, slots=True)
class ReportEndOfStream(MmsCommand):
    """LinkMacToViewerReportEndOfStream (0x1E): no more data (``hr`` 1: a stream change follows)."""

    MID: ClassVar[int] = MessageId.REPORT_END_OF_STREAM
    hr: int = 0
    play_incarnation: int = 4


@dataclass(frozen=True, slots=True)
class ReportStreamChange(MmsCommand):
    """LinkMacToViewerReportStreamChange (0x20): the next playlist entry, with a new header."""

    MID: ClassVar[int] = MessageId.REPORT_STREAM_CHANGE
    packet_size: int
    header_size: int
    bit_rate: int
    hr: int = 0
    tcp_hdr_incarnation: int = 0xFF
    stream_id: int = 0


@dataclass(frozen=True, slots=True)
class ReportRedirect(MmsCommand):
    """LinkMacToViewerReportRedirect (0x22): go to ``location`` (type 1) or proxy (type 2)."""

    MID: ClassVar[int] = MessageId.REPORT_REDIRECT
    location: str
    hr: int = 0
    redirect_type: int = 1


@dataclass(frozen=True, slots=True)
class SecurityChallenge(MmsCommand):
    """LinkMacToViewerSecurityChallenge (0x1A): credentials needed (Basic: UTF-16 realm)."""

    MID: ClassVar[int] = MessageId.SECURITY_CHALLENGE
    token: bytes = b""
    play_incarnation: int = 1
    cookie: int = 0


@dataclass(frozen=True, slots=True)
class Ping(MmsCommand):
    """LinkMacToViewerPing (0x1B): keep-alive; players answer with Pong."""

    MID: ClassVar[int] = MessageId.PING
    param1: int = 0
    param2: int = 0


@dataclass(frozen=True, slots=True)
class UnknownCommand(MmsCommand):
    """A MID this module does not know; ``body`` is the message after the MID (padded)."""

    MID: ClassVar[int] = 0
    mid: int = 0
    body: bytes = b""

    @property
    def direction(self) -> Direction:
        return Direction(self.mid >> 16)


_BODIES: Final[dict[type[MmsCommand], Construct]] = {
    Connect: CONNECT,
    FunnelInfo: FUNNEL_INFO,
    ConnectFunnel: CONNECT_FUNNEL,
    OpenFile: OPEN_FILE,
    ReadBlock: READ_BLOCK,
    StreamSwitch: STREAM_SWITCH,
    StartPlaying: START_PLAYING,
    StartStriding: START_STRIDING,
    StopPlaying: STOP_PLAYING,
    CloseFile: CLOSE_FILE,
    Pong: PING_PONG,
    SecurityResponse: SECURITY_TOKEN,
    Logging: LOGGING,
    ReportConnectedEx: REPORT_CONNECTED_EX,
    ReportConnectedFunnel: REPORT_CONNECTED_FUNNEL,
    ReportDisconnectedFunnel: HR_INCARNATION,
    ReportFunnelInfo: REPORT_FUNNEL_INFO,
    ReportOpenFile: REPORT_OPEN_FILE,
    ReportReadBlock: REPORT_READ_BLOCK,
    ReportStreamSwitch: REPORT_STREAM_SWITCH,
    ReportStartedPlaying: REPORT_STARTED_PLAYING,
    ReportStartStriding: REPORT_START_STRIDING,
    ReportEndOfStream: HR_INCARNATION,
    ReportStreamChange: REPORT_STREAM_CHANGE,
    ReportRedirect: REPORT_REDIRECT,
    SecurityChallenge: SECURITY_TOKEN,
    Ping: PING_PONG,
}
_BY_MID: Final[dict[int, type[MmsCommand]]] = {cls.MID: cls for cls in _BODIES}
_PARSE_ERRORS: Final = (ConstructError, ValueError, OverflowError, struct.error)


def _from_container(cls: type[MmsCommand], c: Any) -> MmsCommand:
    values = {f.name: c[f.name] for f in fields(cls)}
    if cls is StreamSwitch:
        values["entries"] = tuple(
            StreamSwitchEntry(dst=e.dst, thinning=e.thinning, src=e.src) for e in c.entries
        )
    elif cls is StartPlaying and c.acceleration is not None:
        a = c.acceleration
        values["acceleration"] = Acceleration(a.bandwidth, a.duration, a.link_bandwidth)
    return cls(**values)


def _to_dict(cmd: MmsCommand) -> dict[str, Any]:
    values = {f.name: getattr(cmd, f.name) for f in fields(cmd)}
    if isinstance(cmd, StreamSwitch):
        values["entries"] = [
            {"src": e.src, "dst": e.dst, "thinning": int(e.thinning)} for e in cmd.entries
        ]
    elif isinstance(cmd, StartPlaying) and cmd.acceleration is not None:
        a = cmd.acceleration
        values["acceleration"] = {
            "bandwidth": a.bandwidth, "duration": a.duration, "link_bandwidth": a.link_bandwidth
        }
    return values


def is_command(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` starts like a command packet (signature at bytes 4..8)."""
    return bytes(data[4:8]) == _SIGNATURE


def parse_command(data: bytes) -> MmsCommand:
    """Parse one complete command packet into its typed message.

    Raises MmsProtocolError for anything that is not exactly one well-formed command packet.
    """
    try:
        frame = COMMAND_PACKET.parse(data)
        mid = int(getattr(frame.mid, "intvalue", frame.mid))
        cls = _BY_MID.get(mid)
        if cls is None:
            if mid >> 16 not in (Direction.TO_SERVER, Direction.TO_CLIENT):
                raise MmsProtocolError(f"MMS command with bad direction: MID 0x{mid:08x}")
            return UnknownCommand(mid=mid, body=frame.body)
        return _from_container(cls, _BODIES[cls].parse(frame.body))
    except _PARSE_ERRORS as exc:
        raise MmsProtocolError(f"malformed MMS command: {exc}") from exc


def build_command(cmd: MmsCommand, *, sequence: int, timestamp: float = 0.0) -> bytes:
    """Encode ``cmd`` as one command packet, padded to 8 bytes, with the three lengths rebuilt.

    Raises LocalProtocolError when a field does not fit its wire type (a bug on our side).
    """
    try:
        if isinstance(cmd, UnknownCommand):
            mid, body = cmd.mid, cmd.body
        else:
            mid, body = cmd.MID, _BODIES[type(cmd)].build(_to_dict(cmd))
        return COMMAND_PACKET.build(
            {"sequence": sequence, "timestamp": timestamp, "mid": mid, "body": body}
        )
    except (ConstructError, KeyError, TypeError, ValueError, OverflowError, struct.error) as exc:
        raise LocalProtocolError(f"cannot build MMS {type(cmd).__name__}: {exc}") from exc


# --- data packets -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MmsDataPacket:
    """A data packet: a part of the ASF header (``packet_id`` 2) or one ASF data packet.

    ``sequence`` is [MS-MMSP]'s LocationId (ASF packet number, or header part index), ``flags``
    its AFFlags (see :class:`DataFlags`).
    """

    sequence: int
    packet_id: int
    flags: int
    payload: bytes

    @property
    def header_ends(self) -> bool:
        """For a header part: this is the last one (0x08 or 0x0C, as ffmpeg demands)."""
        return bool(self.flags & DataFlags.LAST)


def data_packet_header(data: bytes | bytearray | memoryview) -> tuple[int, int, int, int]:
    """``(sequence, packet_id, flags, length)`` of the packet at the start of ``data``.

    The hot-path twin of :data:`DATA_PACKET` (one ``struct`` call). Needs 8 bytes.
    """
    try:
        return _DATA_HEADER.unpack_from(data)  # type: ignore[return-value]
    except struct.error as exc:
        raise MmsProtocolError("MMS data packet shorter than its 8-byte pre-header") from exc


def parse_data_packet(data: bytes) -> MmsDataPacket:
    """Parse exactly one data packet (one MMSU datagram, or one frame from the TCP stream)."""
    sequence, packet_id, flags, length = data_packet_header(data)
    if length < DATA_PACKET_HEADER_SIZE or length != len(data):
        raise MmsProtocolError(f"MMS data packet length {length} for {len(data)} bytes")
    return MmsDataPacket(sequence, packet_id, flags, bytes(data[DATA_PACKET_HEADER_SIZE:]))


def build_data_packet(sequence: int, packet_id: int, flags: int, payload: bytes) -> bytes:
    """The 8-byte pre-header and ``payload`` (at most 65527 bytes) as one data packet."""
    length = len(payload) + DATA_PACKET_HEADER_SIZE
    try:
        return _DATA_HEADER.pack(sequence, packet_id, flags, length) + payload
    except struct.error as exc:
        raise LocalProtocolError(f"cannot build MMS data packet: {exc}") from exc


def restamp_data_packet(
    packet: bytes, *, sequence: int | None = None, packet_id: int | None = None,
    flags: int | None = None,
) -> bytes:
    """``packet`` with new pre-header fields, the payload untouched (for forwarding)."""
    old_sequence, old_id, old_flags, length = data_packet_header(packet)
    try:
        head = _DATA_HEADER.pack(
            old_sequence if sequence is None else sequence,
            old_id if packet_id is None else packet_id,
            old_flags if flags is None else flags,
            length,
        )
    except struct.error as exc:
        raise LocalProtocolError(f"cannot restamp MMS data packet: {exc}") from exc
    return head + packet[DATA_PACKET_HEADER_SIZE:]


def header_packets(
    header: bytes, *, packet_id: int = HEADER_PACKET_ID, max_payload: int = 0x8000
) -> list[bytes]:
    """The ASF file header (Header Object + 50-byte Data Object header) as data packets.

    Parts are numbered from 0 (LocationId); all but the last carry 0x04, the last 0x08, a lone
    part 0x0C (see :class:`DataFlags`).
    """
    if not 0 < max_payload <= 0xFFFF - DATA_PACKET_HEADER_SIZE:
        raise LocalProtocolError(f"bad header part size {max_payload}")
    parts = [header[i : i + max_payload] for i in range(0, len(header), max_payload)] or [b""]
    last = len(parts) - 1
    return [
        build_data_packet(
            n, packet_id, DataFlags.ONLY if last == 0 else DataFlags.LAST if n == last
            else DataFlags.MORE, part,
        )
        for n, part in enumerate(parts)
    ]


# --- the TCP framer ---------------------------------------------------------------------------


@dataclass(slots=True)
class MmsStreamReader:
    """Cuts the bytes of an MMS TCP connection into command and data packets (sans-I/O).

    ``receive_data(b"")`` marks the end of the stream. ``max_command_size`` caps the memory an
    incomplete command may claim: a length above it fails at once instead of being waited for.
    ``commands_only`` is for a server's side, where players send nothing but commands: 8 bytes
    without the signature fail at once instead of being waited for as a data packet. A reader
    that raised stays failed.
    """

    max_command_size: int = MAX_COMMAND_SIZE
    commands_only: bool = False
    _buffer: bytearray = field(default_factory=bytearray)
    _pos: int = 0
    _eof: bool = False
    _error: MmsProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the socket (``b""`` = the peer closed)."""
        if not data:
            self._eof = True
        elif self._eof:
            raise LocalProtocolError("MMS data received after end of stream")
        else:
            self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes held that are not yet a complete packet."""
        return len(self._buffer) - self._pos

    @property
    def at_eof(self) -> bool:
        """The peer closed and every complete packet has been taken."""
        return self._eof and self.buffered == 0

    def next_frame(self) -> bytes | None:
        """The next complete packet as bytes (command or data), None if more bytes are needed."""
        if self._error is not None:
            raise self._error
        try:
            size = self._next_size()
        except MmsProtocolError as exc:
            self._error = exc
            raise
        if size is None:
            if self._eof and self.buffered:
                self._error = MmsProtocolError(
                    f"MMS connection closed inside a packet ({self.buffered} bytes left)"
                )
                raise self._error
            return None
        start = self._pos
        frame = bytes(self._buffer[start : start + size])
        self._pos = start + size
        if self._pos >= 65536 and self._pos * 2 >= len(self._buffer):
            del self._buffer[: self._pos]
            self._pos = 0
        return frame

    def next_event(self) -> MmsCommand | MmsDataPacket | None:
        """The next complete packet, parsed; None if more bytes are needed."""
        frame = self.next_frame()
        if frame is None:
            return None
        try:
            return parse_command(frame) if is_command(frame) else parse_data_packet(frame)
        except MmsProtocolError as exc:
            self._error = exc
            raise

    def _next_size(self) -> int | None:
        buf, pos = self._buffer, self._pos
        available = len(buf) - pos
        if available < 8:
            return None
        if buf[pos + 4 : pos + 8] == _SIGNATURE:
            if available < 12:
                return None
            size = 16 + int.from_bytes(buf[pos + 8 : pos + 12], "little")
            if size < COMMAND_HEADER_SIZE:
                raise MmsProtocolError(f"MMS command of {size} bytes is shorter than its header")
            if size > self.max_command_size:
                raise MmsProtocolError(
                    f"MMS command of {size} bytes exceeds {self.max_command_size}", status_hint=413
                )
        else:
            if self.commands_only:
                raise MmsProtocolError("MMS data from a player, or not MMS at all")
            size = int.from_bytes(buf[pos + 6 : pos + 8], "little")
            if size < DATA_PACKET_HEADER_SIZE:
                raise MmsProtocolError(f"MMS data packet length {size} is below 8")
        return size if available >= size else None


def file_blocks_for(duration: float) -> int:
    """The ``file_blocks`` value for a clip of ``duration`` seconds (whole seconds, rounded up).

    VLC logs this field as the media length in seconds and Wireshark labels it so.
    """
    return math.ceil(duration) if duration > 0 else 0
