"""The RealMedia file format (.rm): chunk declarations and plain parse/build functions.

Theory of operation
-------------------
A .rm file is a sequence of chunks: four-character id, big-endian u32 size that counts the whole
chunk (id and size included), u16 object version, then the body. ``.RMF`` comes first; the
header section (``PROP``, ``CONT``, ``MDPR`` per stream) is followed by one ``DATA`` chunk that
holds the media packets, then optional ``INDX`` chunks (one per stream).

Parsing is frame first: read id and size with :mod:`struct`, check the size against what is
left, then hand exactly that slice to the construct declaration. ``DATA`` is the exception,
because writers get its size wrong: ffmpeg 5.1 declares 18 bytes more than the chunk holds (and
its own input is 8 bytes short of that), and when writing to a pipe it declares 18 bytes and
``num_packets`` 0 while the packets follow. So the packets are walked by their own lengths:
``num_packets`` of them when the header gives a count, otherwise until the bytes stop looking
like packets.

:func:`build_rm` recomputes every size, count and offset. Where a file declares a value that
disagrees with the recomputed one (ffmpeg's ``num_headers`` counts an ``INDX`` it never writes;
its ``DATA`` size), :func:`parse_rm` keeps the declared value in :class:`RmQuirks`, so
``build_rm(parse_rm(f)) == f`` for the files ffmpeg writes; ``dataclasses.replace(rm,
quirks=RmQuirks())`` gives a file with consistent values instead. Byte-exactness also needs the
canonical chunk order that ffmpeg uses (``.RMF PROP CONT MDPR… DATA INDX…``); files in another
order parse to the same :class:`RmFile` but build in canonical order.

Layouts follow the Helix RMFF specification and libavformat ``rmdec.c``/``rmenc.c``.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from construct import (
    Array,
    Bytes,
    Const,
    Construct,
    ConstructError,
    ExprAdapter,
    FixedSized,
    GreedyBytes,
    If,
    IfThenElse,
    Int8ub,
    Int16ub,
    Int32ub,
    OneOf,
    PascalString,
    Prefixed,
    Rebuild,
    Struct,
    Switch,
    Terminated,
    len_,
    this,
)

from mediacache.errors import LocalProtocolError
from mediacache_realmedia.errors import RealProtocolError

__all__ = [
    "ContentDescription",
    "DataPacket",
    "FileHeader",
    "FileProperties",
    "IndexRecord",
    "IndexTable",
    "LogicalStream",
    "MediaProperties",
    "MultiRateHeader",
    "NameValueProperty",
    "RawChunk",
    "RealAudioInfo",
    "RealVideoInfo",
    "RmFile",
    "RmQuirks",
    "build_logical_stream",
    "build_mlti",
    "build_rm",
    "iter_packets",
    "parse_logical_stream",
    "parse_mlti",
    "parse_realaudio_header",
    "parse_realvideo_header",
    "parse_rm",
    "stream_info",
]

# --------------------------------------------------------------------------------------------
# construct declarations (module-private: nothing below leaks a Container)
# --------------------------------------------------------------------------------------------

#: A chunk's size counts the 8 bytes of id and size; Prefixed wants the body length.
_CHUNK_SIZE = ExprAdapter(Int32ub, lambda obj, ctx: obj - 8, lambda obj, ctx: obj + 8)
#: Size fields inside type-specific data count themselves (4 bytes).
_SELF_SIZE = ExprAdapter(Int32ub, lambda obj, ctx: obj - 4, lambda obj, ctx: obj + 4)

_STR8 = PascalString(Int8ub, "latin-1")
_STR16 = PascalString(Int16ub, "latin-1")


def _chunk(fourcc: bytes, *fields: Construct) -> Struct:
    """A chunk whose size is rebuilt from its body and whose body must fill it exactly."""
    return Struct("id" / Const(fourcc), "body" / Prefixed(_CHUNK_SIZE, Struct(*fields, Terminated)))


_RMF = _chunk(
    b".RMF",
    "object_version" / OneOf(Int16ub, {0, 1}),
    "file_version" / Int32ub,
    "num_headers" / Rebuild(Int32ub, this._params.num_headers),
)

_PROP = _chunk(
    b"PROP",
    "object_version" / Const(0, Int16ub),
    "max_bit_rate" / Int32ub,
    "avg_bit_rate" / Int32ub,
    "max_packet_size" / Int32ub,
    "avg_packet_size" / Int32ub,
    "num_packets" / Rebuild(Int32ub, this._params.num_packets),
    "duration" / Int32ub,
    "preroll" / Int32ub,
    "index_offset" / Rebuild(Int32ub, this._params.index_offset),
    "data_offset" / Rebuild(Int32ub, this._params.data_offset),
    "num_streams" / Rebuild(Int16ub, this._params.num_streams),
    "flags" / Int16ub,
)

_CONT = _chunk(
    b"CONT",
    "object_version" / Const(0, Int16ub),
    "title" / _STR16,
    "author" / _STR16,
    "copyright" / _STR16,
    "comment" / _STR16,
)

_MDPR = _chunk(
    b"MDPR",
    "object_version" / Const(0, Int16ub),
    "stream_number" / Int16ub,
    "max_bit_rate" / Int32ub,
    "avg_bit_rate" / Int32ub,
    "max_packet_size" / Int32ub,
    "avg_packet_size" / Int32ub,
    "start_time" / Int32ub,
    "preroll" / Int32ub,
    "duration" / Int32ub,
    "stream_name" / _STR8,
    "mime_type" / _STR8,
    "type_specific_data" / Prefixed(Int32ub, GreedyBytes),
)

_DATA_HEADER_LEN = 18
_DATA_HEADER = Struct(
    "id" / Const(b"DATA"),
    "size" / Rebuild(Int32ub, this._params.data_size),
    "object_version" / Const(0, Int16ub),
    "num_packets" / Rebuild(Int32ub, this._params.num_packets),
    "next_data_header" / Int32ub,
)

#: Packet header length by packet object version (v1 swaps group+flags for rule+flags).
_PACKET_HEADER_LEN = {0: 12, 1: 13}
_PACKET = Struct(
    "object_version" / OneOf(Int16ub, {0, 1}),
    "length" / Rebuild(
        Int16ub, lambda ctx: _PACKET_HEADER_LEN[ctx["object_version"]] + len(ctx["payload"])
    ),
    "stream_number" / Int16ub,
    "timestamp" / Int32ub,
    "header"
    / Switch(
        this.object_version,
        {
            0: Struct("packet_group" / Int8ub, "flags" / Int8ub),
            1: Struct("asm_rule" / Int16ub, "asm_flags" / Int8ub),
        },
    ),
    "payload" / Bytes(lambda ctx: ctx.length - _PACKET_HEADER_LEN[ctx.object_version]),
)

_INDEX_HEADER_LEN = 20
_INDEX_RECORD_LEN = 14
_INDX = _chunk(
    b"INDX",
    "object_version" / Const(0, Int16ub),
    "num_indices" / Rebuild(Int32ub, len_(this.records)),
    "stream_number" / Int16ub,
    "next_index_header" / Rebuild(Int32ub, this._params.next_index_header),
    "records"
    / Array(
        this.num_indices,
        Struct(
            "object_version" / Const(0, Int16ub),
            "timestamp" / Int32ub,
            "offset" / Int32ub,
            "packet_count" / Int32ub,
        ),
    ),
)

# Type-specific data -------------------------------------------------------------------------

#: RealVideo: size, "VIDO", codec fourcc, then what rmdec.c reads; the rest is codec extradata.
_REALVIDEO = Struct(
    "size" / Rebuild(Int32ub, lambda ctx: 26 + len(ctx["extradata"])),
    "tag" / Const(b"VIDO"),
    "fourcc" / Bytes(4),
    "width" / Int16ub,
    "height" / Int16ub,
    "bits_per_pixel" / Int16ub,
    "unknown" / Int32ub,
    "fps" / Int32ub,  # 16.16 fixed point
    "extradata" / GreedyBytes,
)

#: RealAudio version 3 (14.4 only): a short header with its own length.
_REALAUDIO_V3 = Struct(
    "header_size" / Int16ub,
    "fields"
    / FixedSized(
        this.header_size,
        Struct(
            "unknown1" / Bytes(8),
            "bytes_per_minute" / Int16ub,
            "unknown2" / Bytes(4),
            "title" / _STR8,
            "author" / _STR8,
            "copyright" / _STR8,
            "comment" / _STR8,
            "rest" / GreedyBytes,
        ),
    ),
    "trailing" / GreedyBytes,
)

#: RealAudio versions 4 and 5, field for field as rmdec.c reads them.
_REALAUDIO_V45 = Struct(
    "unused" / Int16ub,
    "ra_tag" / Bytes(4),
    "data_size" / Int32ub,
    "version2" / Int16ub,
    "header_size" / Int32ub,
    "flavor" / Int16ub,
    "coded_frame_size" / Int32ub,
    "unknown1" / Int32ub,
    "bytes_per_minute" / Int32ub,
    "bytes_per_minute2" / Int32ub,
    "sub_packet_h" / Int16ub,
    "frame_size" / Int16ub,
    "sub_packet_size" / Int16ub,
    "unknown2" / Int16ub,
    "v5_extra" / If(this._.version == 5, Bytes(6)),
    "sample_rate" / Int16ub,
    "unknown3" / Int16ub,
    "sample_size" / Int16ub,
    "channels" / Int16ub,
    "interleaver" / IfThenElse(this._.version == 5, Bytes(4), Prefixed(Int8ub, GreedyBytes)),
    "codec" / IfThenElse(this._.version == 5, Bytes(4), Prefixed(Int8ub, GreedyBytes)),
    "rest" / GreedyBytes,
)

_REALAUDIO = Struct(
    "tag" / Const(b".ra\xfd"),
    "version" / OneOf(Int16ub, {3, 4, 5}),
    "body" / Switch(this.version, {3: _REALAUDIO_V3, 4: _REALAUDIO_V45, 5: _REALAUDIO_V45}),
)

#: A name/value property of a logical stream (type 0 u32, 1 buffer, 2 string).
_NAME_VALUE = Prefixed(
    _SELF_SIZE,
    Struct(
        "object_version" / Const(0, Int16ub),
        "name" / _STR8,
        "type" / Int32ub,
        "value" / Prefixed(Int16ub, GreedyBytes),
        Terminated,
    ),
)

#: Type-specific data of "logical-*" MDPRs (SureStream files and "logical-fileinfo").
_LOGICAL_STREAM = Prefixed(
    _SELF_SIZE,
    Struct(
        "object_version" / Const(0, Int16ub),
        "num_physical_streams" / Rebuild(Int16ub, len_(this.physical_stream_numbers)),
        "physical_stream_numbers" / Array(this.num_physical_streams, Int16ub),
        "data_offsets" / Array(this.num_physical_streams, Int32ub),
        "num_rules" / Rebuild(Int16ub, len_(this.rule_to_physical_stream)),
        "rule_to_physical_stream" / Array(this.num_rules, Int16ub),
        "num_properties" / Rebuild(Int16ub, len_(this.properties)),
        "properties" / Array(this.num_properties, _NAME_VALUE),
        Terminated,
    ),
)

#: "MLTI": the multi-rate header a RealServer puts in OpaqueData (rdt.c rdt_load_mdpr).
_MLTI = Struct(
    "tag" / Const(b"MLTI"),
    "num_rules" / Rebuild(Int16ub, len_(this.rule_to_header)),
    "rule_to_header" / Array(this.num_rules, Int16ub),
    "num_headers" / Rebuild(Int16ub, len_(this.headers)),
    "headers" / Array(this.num_headers, Prefixed(Int32ub, GreedyBytes)),
    Terminated,
)

# --------------------------------------------------------------------------------------------
# public data model
# --------------------------------------------------------------------------------------------

_KEYFRAME_FLAG = 0x02  # v0 packet flags (HX_KEYFRAME_FLAG)
_ASM_SWITCH_ON = 0x01  # v1 asm_flags (HX_ASM_SWITCH_ON, what Helix maps keyframes to)


@dataclass(frozen=True, slots=True)
class FileHeader:
    """The ``.RMF`` chunk: object version (0 or 1) and file version."""

    object_version: int = 0
    file_version: int = 0


@dataclass(frozen=True, slots=True)
class FileProperties:
    """``PROP`` without the fields :func:`build_rm` recomputes (packet count, offsets, streams).

    ``flags``: 1 save allowed, 2 perfect play, 4 live broadcast.
    """

    max_bit_rate: int = 0
    avg_bit_rate: int = 0
    max_packet_size: int = 0
    avg_packet_size: int = 0
    duration_ms: int = 0
    preroll_ms: int = 0
    flags: int = 0

    @property
    def live(self) -> bool:
        """Whether the live-broadcast flag is set."""
        return bool(self.flags & 4)


@dataclass(frozen=True, slots=True)
class MediaProperties:
    """One ``MDPR`` chunk; ``type_specific_data`` is what RTSP sends as ``OpaqueData``."""

    stream_number: int
    max_bit_rate: int
    avg_bit_rate: int
    max_packet_size: int
    avg_packet_size: int
    start_time_ms: int
    preroll_ms: int
    duration_ms: int
    stream_name: str
    mime_type: str
    type_specific_data: bytes

    @property
    def is_logical(self) -> bool:
        """A "logical-*" MDPR describes other streams (SureStream, file info), not packets."""
        return self.mime_type.startswith("logical-")


@dataclass(frozen=True, slots=True)
class ContentDescription:
    """``CONT``: four strings, decoded as latin-1 so every byte survives a round trip."""

    title: str = ""
    author: str = ""
    copyright: str = ""
    comment: str = ""


@dataclass(frozen=True, slots=True)
class DataPacket:
    """One media packet of the ``DATA`` chunk.

    ``asm_rule`` is None for a version-0 packet, whose ``flags`` byte has 0x02 = keyframe and
    0x01 = reliable; a version-1 packet carries an ASM rule number and ASM flags instead (in
    ``flags``), where 0x01 (switch-on) is what Helix maps keyframes to.
    """

    stream: int
    timestamp_ms: int
    flags: int
    asm_rule: int | None
    payload: bytes
    packet_group: int = 0

    @property
    def version(self) -> int:
        """Packet object version: 0 (group + flags) or 1 (ASM rule + ASM flags)."""
        return 0 if self.asm_rule is None else 1

    @property
    def keyframe(self) -> bool:
        """Whether a client may start decoding this stream at this packet."""
        if self.asm_rule is None:
            return bool(self.flags & _KEYFRAME_FLAG)
        return bool(self.flags & _ASM_SWITCH_ON)

    @property
    def size(self) -> int:
        """Length of the packet in the file, header included."""
        return _PACKET_HEADER_LEN[self.version] + len(self.payload)


@dataclass(frozen=True, slots=True)
class IndexRecord:
    """One seek point: timestamp, file offset of the packet, and its packet number."""

    timestamp_ms: int
    offset: int
    packet_number: int


@dataclass(frozen=True, slots=True)
class IndexTable:
    """One ``INDX`` chunk: the seek points of one stream. Offsets are kept as given."""

    stream_number: int
    records: tuple[IndexRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class RawChunk:
    """A chunk this module does not interpret (``RMMD``, ``RJMD``…), kept byte for byte."""

    id: bytes
    body: bytes  # everything after the size field, object version included


@dataclass(frozen=True, slots=True)
class RmQuirks:
    """Values a file declares that disagree with what :func:`build_rm` computes.

    None (or False, or empty) means "computed". :func:`parse_rm` fills in only the values that
    differ, so building the parsed file reproduces it.
    """

    num_headers: int | None = None  # .RMF; ffmpeg counts an INDX chunk it never writes
    prop_num_packets: int | None = None
    prop_num_streams: int | None = None
    prop_index_offset: int | None = None
    prop_data_offset: int | None = None
    data_size: int | None = None  # ffmpeg: 18 too large; 18 when written to a pipe
    data_num_packets: int | None = None  # 0 when written to a pipe
    index_sizes_exclude_records: bool = False  # INDX size 20 with records after it
    trailer: bytes = b""  # bytes after the last chunk (ffmpeg: 8 zero bytes)


@dataclass(frozen=True, slots=True)
class RmFile:
    """A whole .rm file. Sizes, counts and offsets are not stored: they follow from the rest."""

    header: FileHeader
    props: FileProperties
    streams: tuple[MediaProperties, ...]
    content: ContentDescription | None
    packets: tuple[DataPacket, ...]
    indexes: tuple[IndexTable, ...] = ()
    next_data_header: int = 0
    extra_headers: tuple[RawChunk, ...] = ()
    extra_chunks: tuple[RawChunk, ...] = ()
    quirks: RmQuirks = field(default_factory=RmQuirks)

    def stream(self, number: int) -> MediaProperties:
        """The ``MDPR`` of stream ``number``; KeyError if there is none."""
        for mp in self.streams:
            if mp.stream_number == number:
                return mp
        raise KeyError(number)


# Type-specific views ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RealVideoInfo:
    """What an MDPR's RealVideo type-specific data says about the codec."""

    fourcc: bytes
    width: int
    height: int
    bits_per_pixel: int
    fps: float
    extradata: bytes


@dataclass(frozen=True, slots=True)
class RealAudioInfo:
    """What an MDPR's RealAudio (``.ra\\xfd``) type-specific data says about the codec."""

    version: int
    codec: bytes
    interleaver: bytes
    sample_rate: int
    channels: int
    flavor: int = 0
    coded_frame_size: int = 0
    sub_packet_h: int = 0
    frame_size: int = 0
    sub_packet_size: int = 0
    bytes_per_minute: int = 0


@dataclass(frozen=True, slots=True)
class NameValueProperty:
    """A logical stream's property; ``type`` 0 = u32, 1 = buffer, 2 = string."""

    name: str
    type: int
    value: bytes

    def as_int(self) -> int:
        """The value of a type-0 property."""
        if self.type != 0 or len(self.value) != 4:
            raise RealProtocolError(f"property {self.name!r} is not a u32")
        return int.from_bytes(self.value, "big")

    def as_str(self) -> str:
        """The value as text, without the C terminator Helix writers append."""
        return self.value.rstrip(b"\x00").decode("latin-1")


@dataclass(frozen=True, slots=True)
class LogicalStream:
    """Type-specific data of a "logical-*" MDPR (e.g. ``logical-fileinfo``)."""

    physical_streams: tuple[tuple[int, int], ...] = ()  # (stream number, data offset)
    rule_to_physical_stream: tuple[int, ...] = ()
    properties: tuple[NameValueProperty, ...] = ()

    def get(self, name: str) -> NameValueProperty | None:
        """The first property called ``name`` (case-insensitive), if any."""
        for prop in self.properties:
            if prop.name.lower() == name.lower():
                return prop
        return None


@dataclass(frozen=True, slots=True)
class MultiRateHeader:
    """``MLTI``: which of several MDPR type-specific blobs each ASM rule uses."""

    rule_to_header: tuple[int, ...]
    headers: tuple[bytes, ...]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

_CHUNK_HEADER = struct.Struct(">4sI")
_PACKET_V0 = struct.Struct(">HHHIBB")
_PACKET_V1 = struct.Struct(">HHHIHB")

#: What may go wrong inside construct or struct on hostile input, all turned into our error.
_PARSE_ERRORS = (ConstructError, struct.error, UnicodeDecodeError, ValueError, OverflowError)
_BUILD_ERRORS = (
    ConstructError,
    struct.error,
    UnicodeEncodeError,
    ValueError,
    OverflowError,
    KeyError,
    TypeError,
)


def _parse(decl: Construct, data: bytes, what: str) -> Any:
    try:
        return decl.parse(data)
    except _PARSE_ERRORS as exc:
        raise RealProtocolError(f"malformed {what}: {exc}") from exc


def _build(decl: Construct, obj: Any, what: str, **params: Any) -> bytes:
    try:
        return decl.build(obj, **params)
    except _BUILD_ERRORS as exc:
        raise LocalProtocolError(f"cannot build {what}: {exc}") from exc


def _fourcc(cid: bytes) -> str:
    return cid.decode("latin-1").encode("unicode_escape").decode("ascii")


def _packet_at(data: bytes | memoryview, pos: int) -> tuple[DataPacket, int]:
    """Parse the packet at ``pos``; returns it and the position after it.

    Uses struct rather than construct: this runs once per packet of every file served. The
    hypothesis tests check it agrees with the ``_PACKET`` declaration.
    """
    left = len(data) - pos
    if left < 4:
        raise RealProtocolError(f"truncated packet header at offset {pos}")
    version, length = struct.unpack_from(">HH", data, pos)
    if version not in _PACKET_HEADER_LEN:
        raise RealProtocolError(f"unknown packet version {version} at offset {pos}")
    hlen = _PACKET_HEADER_LEN[version]
    if length < hlen:
        raise RealProtocolError(f"packet at offset {pos} is {length} bytes, less than a header")
    if length > left:
        raise RealProtocolError(f"packet at offset {pos} claims {length} bytes, {left} left")
    if version == 0:
        _, _, stream, ts, group, flags = _PACKET_V0.unpack_from(data, pos)
        rule = None
    else:
        _, _, stream, ts, rule, flags = _PACKET_V1.unpack_from(data, pos)
        group = 0
    payload = bytes(data[pos + hlen : pos + length])
    return DataPacket(stream, ts, flags, rule, payload, group), pos + length


def _walk_packets(
    data: bytes | memoryview, start: int, count: int
) -> Iterator[tuple[DataPacket, int]]:
    """Yield (packet, end position) from ``start``: ``count`` packets, or if 0 all that follow.

    With no count (a file written to a pipe) the walk stops at the end of the input, at a
    zero-length packet (ffmpeg's 8-byte end marker) or at a chunk id (chunk ids are ASCII, packet
    headers start with a zero byte).
    """
    pos = start
    if count:
        for _ in range(count):
            pkt, pos = _packet_at(data, pos)
            yield pkt, pos
        return
    end = len(data)
    while pos < end:
        if data[pos] != 0:
            return
        if end - pos < 4:
            if any(data[pos:end]):
                raise RealProtocolError(f"truncated packet header at offset {pos}")
            return
        if struct.unpack_from(">H", data, pos + 2)[0] == 0:
            return
        pkt, pos = _packet_at(data, pos)
        yield pkt, pos


def _find_data_chunk(data: bytes | memoryview) -> int:
    """Offset of the ``DATA`` chunk, found by walking chunk headers only."""
    if bytes(data[:4]) == b"DATA":
        return 0
    if bytes(data[:4]) != b".RMF":
        raise RealProtocolError("not a RealMedia file (no .RMF header)")
    pos = 0
    while len(data) - pos >= 8:
        cid, size = _CHUNK_HEADER.unpack_from(data, pos)
        if cid == b"DATA":
            return pos
        if size < 8 or size > len(data) - pos:
            raise RealProtocolError(f"chunk {_fourcc(cid)} at offset {pos} has bad size {size}")
        pos += size
    raise RealProtocolError("no DATA chunk")


# --------------------------------------------------------------------------------------------
# parse
# --------------------------------------------------------------------------------------------


def iter_packets(data: bytes | memoryview) -> Iterator[DataPacket]:
    """Walk the packets of the ``DATA`` chunk lazily, without parsing the header section.

    ``data`` is a whole file or a buffer that starts with the ``DATA`` chunk.
    """
    pos = _find_data_chunk(data)
    if len(data) - pos < _DATA_HEADER_LEN:
        raise RealProtocolError("truncated DATA chunk header")
    hdr = _parse(_DATA_HEADER, bytes(data[pos : pos + _DATA_HEADER_LEN]), "DATA header")
    for pkt, _ in _walk_packets(data, pos + _DATA_HEADER_LEN, hdr.num_packets):
        yield pkt


def parse_rm(data: bytes) -> RmFile:
    """Parse a whole .rm file; raises :class:`RealProtocolError` and nothing else on bad input."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_rm wants bytes")
    data = bytes(data)
    if len(data) < 8 or data[:4] != b".RMF":
        raise RealProtocolError("not a RealMedia file (no .RMF header)")

    header: FileHeader | None = None
    props: FileProperties | None = None
    content: ContentDescription | None = None
    streams: list[MediaProperties] = []
    packets: list[DataPacket] | None = None
    indexes: list[IndexTable] = []
    extra_headers: list[RawChunk] = []
    extra_chunks: list[RawChunk] = []
    declared: dict[str, int] = {}
    short_index = False
    trailer = b""
    next_data_header = 0

    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8 or data[pos : pos + 4] == b"\x00\x00\x00\x00":
            trailer = data[pos:]
            if any(trailer):
                raise RealProtocolError(f"unparseable bytes after the last chunk at offset {pos}")
            break
        cid, size = _CHUNK_HEADER.unpack_from(data, pos)

        if cid == b"DATA":
            if packets is not None:
                raise RealProtocolError("more than one DATA chunk (not supported)")
            if end - pos < _DATA_HEADER_LEN:
                raise RealProtocolError("truncated DATA chunk header")
            hdr = _parse(_DATA_HEADER, data[pos : pos + _DATA_HEADER_LEN], "DATA header")
            packets = []
            after = pos + _DATA_HEADER_LEN
            for pkt, end_of_packet in _walk_packets(data, after, hdr.num_packets):
                packets.append(pkt)
                after = end_of_packet
            declared["data_size"] = hdr.size
            declared["data_num_packets"] = hdr.num_packets
            next_data_header = hdr.next_data_header
            pos = after
            continue

        patched = False
        if cid == b"INDX" and size == _INDEX_HEADER_LEN and end - pos >= _INDEX_HEADER_LEN:
            # rmdec.c: "some files don't add index entries to chunk size"
            n = struct.unpack_from(">I", data, pos + 10)[0]
            if n:
                size = _INDEX_HEADER_LEN + n * _INDEX_RECORD_LEN
                short_index = patched = True
        if size < 10:
            raise RealProtocolError(f"chunk {_fourcc(cid)} at offset {pos} has bad size {size}")
        if size > end - pos:
            raise RealProtocolError(
                f"chunk {_fourcc(cid)} at offset {pos} claims {size} bytes, {end - pos} left"
            )
        chunk = data[pos : pos + size]
        if patched:
            chunk = chunk[:4] + _CHUNK_HEADER.pack(cid, size)[4:] + chunk[8:]

        if cid == b".RMF":
            if pos != 0:
                raise RealProtocolError(f"second .RMF header at offset {pos}")
            c = _parse(_RMF, chunk, ".RMF header").body
            header = FileHeader(c.object_version, c.file_version)
            declared["num_headers"] = c.num_headers
        elif cid == b"PROP":
            if props is not None:
                raise RealProtocolError("more than one PROP chunk")
            c = _parse(_PROP, chunk, "PROP chunk").body
            props = FileProperties(
                c.max_bit_rate,
                c.avg_bit_rate,
                c.max_packet_size,
                c.avg_packet_size,
                c.duration,
                c.preroll,
                c.flags,
            )
            declared["prop_num_packets"] = c.num_packets
            declared["prop_num_streams"] = c.num_streams
            declared["prop_index_offset"] = c.index_offset
            declared["prop_data_offset"] = c.data_offset
        elif cid == b"CONT":
            if content is not None:
                raise RealProtocolError("more than one CONT chunk")
            c = _parse(_CONT, chunk, "CONT chunk").body
            content = ContentDescription(c.title, c.author, c.copyright, c.comment)
        elif cid == b"MDPR":
            c = _parse(_MDPR, chunk, "MDPR chunk").body
            streams.append(
                MediaProperties(
                    c.stream_number,
                    c.max_bit_rate,
                    c.avg_bit_rate,
                    c.max_packet_size,
                    c.avg_packet_size,
                    c.start_time,
                    c.preroll,
                    c.duration,
                    c.stream_name,
                    c.mime_type,
                    c.type_specific_data,
                )
            )
        elif cid == b"INDX":
            c = _parse(_INDX, chunk, "INDX chunk").body
            records = tuple(IndexRecord(r.timestamp, r.offset, r.packet_count) for r in c.records)
            indexes.append(IndexTable(c.stream_number, records))
        else:
            if not all(0x20 <= b < 0x7F for b in cid):
                raise RealProtocolError(f"no chunk id at offset {pos}")
            raw = RawChunk(cid, chunk[8:])
            (extra_headers if packets is None else extra_chunks).append(raw)
        pos += size

    if header is None:  # pragma: no cover - the loop starts at .RMF
        raise RealProtocolError("no .RMF header")
    if props is None:
        raise RealProtocolError("no PROP chunk")
    if packets is None:
        raise RealProtocolError("no DATA chunk")

    rm = RmFile(
        header=header,
        props=props,
        streams=tuple(streams),
        content=content,
        packets=tuple(packets),
        indexes=tuple(indexes),
        next_data_header=next_data_header,
        extra_headers=tuple(extra_headers),
        extra_chunks=tuple(extra_chunks),
    )
    computed = _layout(rm).as_declared()
    differing = {k: v for k, v in declared.items() if computed[k] != v}
    quirks = RmQuirks(**differing, index_sizes_exclude_records=short_index, trailer=trailer)
    return RmFile(
        header=rm.header,
        props=rm.props,
        streams=rm.streams,
        content=rm.content,
        packets=rm.packets,
        indexes=rm.indexes,
        next_data_header=rm.next_data_header,
        extra_headers=rm.extra_headers,
        extra_chunks=rm.extra_chunks,
        quirks=quirks,
    )


# --------------------------------------------------------------------------------------------
# build
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Layout:
    """Where everything lands when an :class:`RmFile` is written in canonical order."""

    num_headers: int
    data_offset: int
    data_size: int
    num_packets: int
    num_streams: int
    index_offsets: tuple[int, ...]

    def as_declared(self) -> dict[str, int]:
        return {
            "num_headers": self.num_headers,
            "prop_num_packets": self.num_packets,
            "prop_num_streams": self.num_streams,
            "prop_index_offset": self.index_offsets[0] if self.index_offsets else 0,
            "prop_data_offset": self.data_offset,
            "data_size": self.data_size,
            "data_num_packets": self.num_packets,
        }


def _str_len(s: str) -> int:
    return len(s.encode("latin-1", errors="replace"))


def _layout(rm: RmFile) -> _Layout:
    """Compute sizes and offsets arithmetically (the round-trip tests pin them to build_rm)."""
    pos = 18 + 50  # .RMF, PROP
    if rm.content is not None:
        c = rm.content
        pos += 18 + sum(_str_len(s) for s in (c.title, c.author, c.copyright, c.comment))
    for mp in rm.streams:
        pos += 10 + 30 + 1 + _str_len(mp.stream_name) + 1 + _str_len(mp.mime_type) + 4
        pos += len(mp.type_specific_data)
    pos += sum(8 + len(raw.body) for raw in rm.extra_headers)
    data_offset = pos
    data_size = _DATA_HEADER_LEN + sum(p.size for p in rm.packets)
    pos += data_size
    index_offsets = []
    for table in rm.indexes:
        index_offsets.append(pos)
        pos += _INDEX_HEADER_LEN + _INDEX_RECORD_LEN * len(table.records)
    chunks_after_rmf = (
        1
        + (rm.content is not None)
        + len(rm.streams)
        + len(rm.extra_headers)
        + 1
        + len(rm.indexes)
        + len(rm.extra_chunks)
    )
    return _Layout(
        num_headers=chunks_after_rmf,
        data_offset=data_offset,
        data_size=data_size,
        num_packets=len(rm.packets),
        num_streams=len(rm.streams),
        index_offsets=tuple(index_offsets),
    )


def _pick(override: int | None, computed: int) -> int:
    return computed if override is None else override


def _packet_obj(p: DataPacket) -> dict[str, Any]:
    if p.asm_rule is None:
        hdr = {"packet_group": p.packet_group, "flags": p.flags}
    else:
        hdr = {"asm_rule": p.asm_rule, "asm_flags": p.flags}
    return {
        "object_version": p.version,
        "stream_number": p.stream,
        "timestamp": p.timestamp_ms,
        "header": hdr,
        "payload": p.payload,
    }


def _raw_chunk(raw: RawChunk) -> bytes:
    if len(raw.id) != 4:
        raise LocalProtocolError(f"chunk id {raw.id!r} is not four bytes")
    return _CHUNK_HEADER.pack(raw.id, 8 + len(raw.body)) + raw.body


def build_rm(rm: RmFile) -> bytes:
    """Write ``rm`` in canonical chunk order, recomputing sizes, counts and offsets.

    Values in ``rm.quirks`` replace the computed ones (that is how ffmpeg's files come back
    byte for byte). Raises :class:`LocalProtocolError` for values that do not fit the format.
    """
    lay = _layout(rm)
    q = rm.quirks
    parts: list[bytes] = []
    parts.append(
        _build(
            _RMF,
            {"body": {"object_version": rm.header.object_version,
                      "file_version": rm.header.file_version}},
            ".RMF header",
            num_headers=_pick(q.num_headers, lay.num_headers),
        )
    )
    p = rm.props
    parts.append(
        _build(
            _PROP,
            {
                "body": {
                    "max_bit_rate": p.max_bit_rate,
                    "avg_bit_rate": p.avg_bit_rate,
                    "max_packet_size": p.max_packet_size,
                    "avg_packet_size": p.avg_packet_size,
                    "duration": p.duration_ms,
                    "preroll": p.preroll_ms,
                    "flags": p.flags,
                }
            },
            "PROP chunk",
            num_packets=_pick(q.prop_num_packets, lay.num_packets),
            num_streams=_pick(q.prop_num_streams, lay.num_streams),
            index_offset=_pick(
                q.prop_index_offset, lay.index_offsets[0] if lay.index_offsets else 0
            ),
            data_offset=_pick(q.prop_data_offset, lay.data_offset),
        )
    )
    if rm.content is not None:
        c = rm.content
        body = {"title": c.title, "author": c.author, "copyright": c.copyright,
                "comment": c.comment}
        parts.append(_build(_CONT, {"body": body}, "CONT chunk"))
    for mp in rm.streams:
        body = {
            "stream_number": mp.stream_number,
            "max_bit_rate": mp.max_bit_rate,
            "avg_bit_rate": mp.avg_bit_rate,
            "max_packet_size": mp.max_packet_size,
            "avg_packet_size": mp.avg_packet_size,
            "start_time": mp.start_time_ms,
            "preroll": mp.preroll_ms,
            "duration": mp.duration_ms,
            "stream_name": mp.stream_name,
            "mime_type": mp.mime_type,
            "type_specific_data": mp.type_specific_data,
        }
        parts.append(_build(_MDPR, {"body": body}, f"MDPR chunk of stream {mp.stream_number}"))
    parts.extend(_raw_chunk(raw) for raw in rm.extra_headers)

    if sum(map(len, parts)) != lay.data_offset:  # pragma: no cover - guards _layout
        raise LocalProtocolError("internal error: header layout disagrees with built chunks")
    parts.append(
        _build(
            _DATA_HEADER,
            {"next_data_header": rm.next_data_header},
            "DATA header",
            data_size=_pick(q.data_size, lay.data_size),
            num_packets=_pick(q.data_num_packets, lay.num_packets),
        )
    )
    parts.extend(_build(_PACKET, _packet_obj(pkt), "data packet") for pkt in rm.packets)

    for i, table in enumerate(rm.indexes):
        nxt = lay.index_offsets[i + 1] if i + 1 < len(rm.indexes) else 0
        records = [
            {"timestamp": r.timestamp_ms, "offset": r.offset, "packet_count": r.packet_number}
            for r in table.records
        ]
        chunk = _build(
            _INDX,
            {"body": {"stream_number": table.stream_number, "records": records}},
            "INDX chunk",
            next_index_header=nxt,
        )
        if q.index_sizes_exclude_records and records:
            chunk = chunk[:4] + struct.pack(">I", _INDEX_HEADER_LEN) + chunk[8:]
        parts.append(chunk)
    parts.extend(_raw_chunk(raw) for raw in rm.extra_chunks)
    parts.append(q.trailer)
    return b"".join(parts)


# --------------------------------------------------------------------------------------------
# type-specific data
# --------------------------------------------------------------------------------------------


def parse_realvideo_header(data: bytes) -> RealVideoInfo:
    """RealVideo type-specific data (``VIDO``); the size field is ignored, as rmdec.c does."""
    c = _parse(_REALVIDEO, data, "RealVideo header")
    return RealVideoInfo(
        c.fourcc, c.width, c.height, c.bits_per_pixel, c.fps / 65536.0, c.extradata
    )


def parse_realaudio_header(data: bytes) -> RealAudioInfo:
    """RealAudio type-specific data (``.ra\\xfd``, versions 3 to 5), as far as rmdec.c reads."""
    c = _parse(_REALAUDIO, data, "RealAudio header")
    b = c.body
    if c.version == 3:
        return RealAudioInfo(
            3, b"lpcJ", b"Int0", 8000, 1, bytes_per_minute=b.fields.bytes_per_minute
        )
    return RealAudioInfo(
        version=c.version,
        codec=bytes(b.codec),
        interleaver=bytes(b.interleaver),
        sample_rate=b.sample_rate,
        channels=b.channels,
        flavor=b.flavor,
        coded_frame_size=b.coded_frame_size,
        sub_packet_h=b.sub_packet_h,
        frame_size=b.frame_size,
        sub_packet_size=b.sub_packet_size,
        bytes_per_minute=b.bytes_per_minute,
    )


def parse_logical_stream(data: bytes) -> LogicalStream:
    """Type-specific data of a ``logical-*`` MDPR such as ``logical-fileinfo``."""
    c = _parse(_LOGICAL_STREAM, data, "logical stream header")
    return LogicalStream(
        physical_streams=tuple(zip(c.physical_stream_numbers, c.data_offsets, strict=True)),
        rule_to_physical_stream=tuple(c.rule_to_physical_stream),
        properties=tuple(NameValueProperty(p.name, p.type, p.value) for p in c.properties),
    )


def build_logical_stream(ls: LogicalStream) -> bytes:
    """Inverse of :func:`parse_logical_stream`."""
    obj = {
        "physical_stream_numbers": [n for n, _ in ls.physical_streams],
        "data_offsets": [o for _, o in ls.physical_streams],
        "rule_to_physical_stream": list(ls.rule_to_physical_stream),
        "properties": [{"name": p.name, "type": p.type, "value": p.value} for p in ls.properties],
    }
    return _build(_LOGICAL_STREAM, obj, "logical stream header")


def parse_mlti(data: bytes) -> MultiRateHeader:
    """The ``MLTI`` multi-rate blob a RealServer may put in ``OpaqueData``."""
    c = _parse(_MLTI, data, "MLTI header")
    return MultiRateHeader(tuple(c.rule_to_header), tuple(bytes(h) for h in c.headers))


def build_mlti(mlti: MultiRateHeader) -> bytes:
    """Inverse of :func:`parse_mlti`."""
    obj = {"rule_to_header": list(mlti.rule_to_header), "headers": list(mlti.headers)}
    return _build(_MLTI, obj, "MLTI header")


def stream_info(mp: MediaProperties) -> RealVideoInfo | RealAudioInfo | LogicalStream | None:
    """Interpret an MDPR's type-specific data by its shape; None when it is none of ours."""
    tsd = mp.type_specific_data
    if mp.is_logical:
        return parse_logical_stream(tsd)
    if tsd[:4] == b".ra\xfd":
        return parse_realaudio_header(tsd)
    if tsd[4:8] == b"VIDO":
        return parse_realvideo_header(tsd)
    return None
