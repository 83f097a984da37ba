"""ASF (Advanced Systems Format): the header, the Data Object header and data packets.

What MMS carries is ASF: first the "ASF file header" (the whole Header Object plus the 50-byte
start of the Data Object), then one ASF data packet per MMS data packet, all of the fixed packet
size the File Properties Object announces. This module reads both, rebuilds headers, and cuts
payloads of unselected streams out of data packets: that is how one Intelligent Streaming
variant (a set of stream numbers of one file) becomes its own cache object.

Declarations follow the ASF specification (revision 01.20.05) and, where readers matter, what
libavformat's ``asfdec_f.c`` and ``mms.c`` accept. GUIDs are :class:`uuid.UUID` on the Python side
and 16 little-endian-field bytes on the wire (``UUID.bytes_le``).

Theory of operation: data packets
---------------------------------
A packet is [error correction data] payload-parsing-information payload(s) [padding]::

    0x82 e e             error correction: flags (0x80 present, low nibble = length), data
    LTF PF               length type flags, property flags: 2-bit size codes (0/1/2/4 bytes)
    [packet length] [sequence] [padding length]       sizes from LTF bits 5-6, 1-2, 3-4
    send time u32 (ms), duration u16 (ms)
    single payload:      stream, object number, offset, replicated length + data, data...
    multiple (LTF bit 0): flags (count, length size), then per payload the same fields
                          and an explicit payload length

The sizes of object number, offset and replicated-data length come from PF. A replicated data
length of 1 marks a compressed payload: the offset field is then the presentation time and the
data is a run of (u8 size, media object) sub-payloads. With no packet length field the packet is
the header's packet size long; the payload data ends ``padding length`` bytes before that.

:func:`parse_data_packet` reads a packet with the construct declarations; :func:`filter_streams`,
which runs for every packet of a multi-rate fill, uses a ``struct`` scanner (:func:`scan_payloads`)
that a property test holds equal to the declarations.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields, replace
from typing import Any, ClassVar, Final, NamedTuple

from construct import (
    Adapter,
    Array,
    Bytes,
    Computed,
    Const,
    Construct,
    ConstructError,
    Default,
    FixedSized,
    GreedyBytes,
    GreedyRange,
    If,
    Int8ul,
    Int16ul,
    Int32sl,
    Int32ul,
    Int64ul,
    LazyBound,
    Peek,
    Prefixed,
    Rebuild,
    Struct,
    Switch,
    Tell,
    Terminated,
    len_,
    this,
)

from mediacache.errors import LocalProtocolError
from mediacache_wmt.errors import MmsProtocolError

__all__ = [
    "DATA_OBJECT_HEADER_SIZE",
    "AsfDataPacket",
    "AsfHeader",
    "AsfPayload",
    "AsfStream",
    "BitrateMutualExclusion",
    "CodecEntry",
    "CodecList",
    "ContentDescription",
    "DataObjectHeader",
    "ExtendedStreamProperties",
    "FileProperties",
    "HeaderExtension",
    "HeaderObject",
    "PaddingObject",
    "PayloadSpan",
    "StreamBitrateProperties",
    "StreamProperties",
    "UnknownObject",
    "VideoFormat",
    "WaveFormat",
    "build_asf_header",
    "build_data_packet",
    "filter_streams",
    "header_for_streams",
    "iter_data_packets",
    "packet_send_time",
    "parse_asf_header",
    "parse_data_packet",
    "scan_payloads",
    "shift_times",
]

# --- GUIDs ------------------------------------------------------------------------------------

HEADER_OBJECT_GUID: Final = uuid.UUID("75B22630-668E-11CF-A6D9-00AA0062CE6C")
DATA_OBJECT_GUID: Final = uuid.UUID("75B22636-668E-11CF-A6D9-00AA0062CE6C")
FILE_PROPERTIES_GUID: Final = uuid.UUID("8CABDCA1-A947-11CF-8EE4-00C00C205365")
STREAM_PROPERTIES_GUID: Final = uuid.UUID("B7DC0791-A9B7-11CF-8EE6-00C00C205365")
HEADER_EXTENSION_GUID: Final = uuid.UUID("5FBF03B5-A92E-11CF-8EE3-00C00C205365")
CODEC_LIST_GUID: Final = uuid.UUID("86D15240-311D-11D0-A3A4-00A0C90348F6")
CONTENT_DESCRIPTION_GUID: Final = uuid.UUID("75B22633-668E-11CF-A6D9-00AA0062CE6C")
STREAM_BITRATE_PROPERTIES_GUID: Final = uuid.UUID("7BF875CE-468D-11D1-8D82-006097C9A2B2")
PADDING_GUID: Final = uuid.UUID("1806D474-CADF-4509-A4BA-9AABCB96AAE8")
BITRATE_MUTUAL_EXCLUSION_GUID: Final = uuid.UUID("D6E229DC-35DA-11D1-9034-00A0C90349BE")
EXTENDED_STREAM_PROPERTIES_GUID: Final = uuid.UUID("14E6A5CB-C672-4332-8399-A96952065B5A")
RESERVED_1_GUID: Final = uuid.UUID("ABD3D211-A9BA-11CF-8EE6-00C00C205365")
CODEC_LIST_RESERVED_GUID: Final = uuid.UUID("86D15241-311D-11D0-A3A4-00A0C90348F6")
AUDIO_MEDIA_GUID: Final = uuid.UUID("F8699E40-5B4D-11CF-A8FD-00805F5C442B")
VIDEO_MEDIA_GUID: Final = uuid.UUID("BC19EFC0-5B4D-11CF-A8FD-00805F5C442B")
NO_ERROR_CORRECTION_GUID: Final = uuid.UUID("20FB5700-5B55-11CF-A8FD-00805F5C442B")
AUDIO_SPREAD_GUID: Final = uuid.UUID("BFC3CD50-618F-11CF-8BB2-00AA00B4E220")

STREAM_KINDS: Final[dict[uuid.UUID, str]] = {
    AUDIO_MEDIA_GUID: "audio",
    VIDEO_MEDIA_GUID: "video",
    uuid.UUID("59DACFC0-59E6-11D0-A3AC-00A0C90348F6"): "command",
    uuid.UUID("B61BE100-5B4E-11CF-A8FD-00805F5C442B"): "jfif",
    uuid.UUID("35907DE0-E415-11CF-A917-00805F5C442B"): "degradable-jpeg",
    uuid.UUID("91BD222C-F21C-497A-8B6D-5AA86BFC0185"): "file-transfer",
    uuid.UUID("3AFB65E2-47EF-40F2-AC2C-70A90D71D343"): "binary",
}

DATA_OBJECT_HEADER_SIZE: Final = 50
MAX_HEADER_SIZE: Final = 16 << 20  # a guard: real headers are KiB, a few MiB with cover art
_PARSE_ERRORS: Final = (ConstructError, ValueError, OverflowError, struct.error, IndexError)

# --- construct helpers --------------------------------------------------------------------------


class _GuidAdapter(Adapter):  # type: ignore[misc]
    def _decode(self, obj: bytes, context: Any, path: str) -> uuid.UUID:
        return uuid.UUID(bytes_le=obj)

    def _encode(self, obj: uuid.UUID, context: Any, path: str) -> bytes:
        return obj.bytes_le


Guid = _GuidAdapter(Bytes(16))


class _ObjectSize(Adapter):  # type: ignore[misc]
    """An object's size field (which counts the 24-byte GUID + size) as its body length."""

    def _decode(self, obj: int, context: Any, path: str) -> int:
        if obj < 24:
            raise ConstructError(f"ASF object size {obj} is below 24", path=path)
        return obj - 24

    def _encode(self, obj: int, context: Any, path: str) -> int:
        return obj + 24


_OBJECT_SIZE = _ObjectSize(Int64ul)


class _Utf16(Adapter):  # type: ignore[misc]
    """UTF-16LE text of an exact byte size (nothing stripped, nothing added)."""

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        return obj.decode("utf-16-le", "surrogatepass")

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return obj.encode("utf-16-le", "surrogatepass")


class _Utf16Nul(Adapter):  # type: ignore[misc]
    """UTF-16LE text stored with one terminating NUL (empty text: no bytes at all)."""

    def _decode(self, obj: bytes, context: Any, path: str) -> str:
        text = obj.decode("utf-16-le", "surrogatepass")
        return text[:-1] if text.endswith("\x00") else text

    def _encode(self, obj: str, context: Any, path: str) -> bytes:
        return obj.encode("utf-16-le", "surrogatepass") + b"\x00\x00" if obj else b""


def _nul_size(text: str) -> int:
    """Bytes of ``text`` in UTF-16LE with its NUL, 0 for empty text."""
    return len(text.encode("utf-16-le", "surrogatepass")) + 2 if text else 0


def _var(size_code: Any) -> Construct:
    """A field whose size is a 2-bit code of the packet: 0 absent (value 0), 1, 2 or 4 bytes."""
    return Switch(size_code, {1: Int8ul, 2: Int16ul, 3: Int32ul}, default=Computed(0))


# --- construct declarations: header objects -----------------------------------------------------

FILE_PROPERTIES = Struct(
    "file_id" / Guid,
    "file_size" / Int64ul,
    "creation_date" / Int64ul,
    "data_packets_count" / Int64ul,
    "play_duration" / Int64ul,  # 100 ns, preroll included
    "send_duration" / Int64ul,
    "preroll" / Int64ul,  # ms
    "flags" / Int32ul,  # 0x1 broadcast, 0x2 seekable
    "min_data_packet_size" / Int32ul,
    "max_data_packet_size" / Int32ul,
    "max_bitrate" / Int32ul,
)
STREAM_PROPERTIES = Struct(
    "stream_type" / Guid,
    "error_correction_type" / Guid,
    "time_offset" / Int64ul,
    "type_specific_data_length" / Rebuild(Int32ul, len_(this.type_specific_data)),
    "error_correction_data_length" / Rebuild(Int32ul, len_(this.error_correction_data)),
    "flags" / Int16ul,  # bits 0-6 stream number, bit 15 encrypted
    "reserved" / Int32ul,
    "type_specific_data" / Bytes(this.type_specific_data_length),
    "error_correction_data" / Bytes(this.error_correction_data_length),
)
WAVE_FORMAT = Struct(  # type-specific data of an audio stream: WAVEFORMATEX
    "codec_id" / Int16ul,
    "channels" / Int16ul,
    "samples_per_second" / Int32ul,
    "average_bytes_per_second" / Int32ul,
    "block_alignment" / Int16ul,
    "bits_per_sample" / Int16ul,
    "codec_specific_data" / Prefixed(Int16ul, GreedyBytes),
)
VIDEO_FORMAT = Struct(  # type-specific data of a video stream, with its BITMAPINFOHEADER
    "encoded_image_width" / Int32ul,
    "encoded_image_height" / Int32ul,
    "reserved_flags" / Int8ul,
    "format_data_size" / Int16ul,
    "format" / FixedSized(
        this.format_data_size,
        Struct(
            "size" / Int32ul,
            "width" / Int32sl,
            "height" / Int32sl,
            "planes" / Int16ul,
            "bits_per_pixel" / Int16ul,
            "compression" / Bytes(4),
            "image_size" / Int32ul,
            "x_pixels_per_meter" / Int32sl,
            "y_pixels_per_meter" / Int32sl,
            "colors_used" / Int32ul,
            "important_colors" / Int32ul,
            "codec_specific_data" / GreedyBytes,
        ),
    ),
)
STREAM_BITRATE_PROPERTIES = Struct(
    "count" / Rebuild(Int16ul, len_(this.records)),
    "records" / Array(this.count, Struct("flags" / Int16ul, "average_bitrate" / Int32ul)),
)
BITRATE_MUTUAL_EXCLUSION = Struct(
    "exclusion_type" / Guid,
    "count" / Rebuild(Int16ul, len_(this.stream_numbers)),
    "stream_numbers" / Array(this.count, Int16ul),
)
CONTENT_DESCRIPTION = Struct(
    "title_length" / Rebuild(Int16ul, lambda ctx: _nul_size(ctx.title)),
    "author_length" / Rebuild(Int16ul, lambda ctx: _nul_size(ctx.author)),
    "copyright_length" / Rebuild(Int16ul, lambda ctx: _nul_size(ctx.copyright)),
    "description_length" / Rebuild(Int16ul, lambda ctx: _nul_size(ctx.description)),
    "rating_length" / Rebuild(Int16ul, lambda ctx: _nul_size(ctx.rating)),
    "title" / _Utf16Nul(Bytes(this.title_length)),
    "author" / _Utf16Nul(Bytes(this.author_length)),
    "copyright" / _Utf16Nul(Bytes(this.copyright_length)),
    "description" / _Utf16Nul(Bytes(this.description_length)),
    "rating" / _Utf16Nul(Bytes(this.rating_length)),
)
CODEC_LIST = Struct(
    "reserved" / Const(CODEC_LIST_RESERVED_GUID.bytes_le),
    "count" / Rebuild(Int32ul, len_(this.entries)),
    "entries" / Array(
        this.count,
        Struct(
            "type" / Int16ul,  # 1 video, 2 audio, 0xFFFF unknown
            "name_length" / Rebuild(Int16ul, lambda ctx: _nul_size(ctx.name) // 2),  # WCHARs
            "name" / _Utf16Nul(Bytes(this.name_length * 2)),
            "description_length" / Rebuild(Int16ul, lambda ctx: _nul_size(ctx.description) // 2),
            "description" / _Utf16Nul(Bytes(this.description_length * 2)),
            "information_length" / Rebuild(Int16ul, len_(this.information)),  # bytes
            "information" / Bytes(this.information_length),
        ),
    ),
)
EXTENDED_STREAM_PROPERTIES = Struct(
    "start_time" / Int64ul,
    "end_time" / Int64ul,
    "data_bitrate" / Int32ul,  # what ffmpeg takes as a video stream's bit rate
    "buffer_size" / Int32ul,
    "initial_buffer_fullness" / Int32ul,
    "alternate_data_bitrate" / Int32ul,
    "alternate_buffer_size" / Int32ul,
    "alternate_initial_buffer_fullness" / Int32ul,
    "maximum_object_size" / Int32ul,
    "flags" / Int32ul,
    "stream_number" / Int16ul,
    "stream_language_id_index" / Int16ul,
    "average_time_per_frame" / Int64ul,
    "stream_name_count" / Rebuild(Int16ul, len_(this.stream_names)),
    "payload_extension_system_count" / Rebuild(Int16ul, len_(this.payload_extension_systems)),
    "stream_names" / Array(
        this.stream_name_count,
        Struct("language_id_index" / Int16ul, "name" / Prefixed(Int16ul, _Utf16(GreedyBytes))),
    ),
    "payload_extension_systems" / Array(
        this.payload_extension_system_count,
        Struct(
            "extension_system_id" / Guid,
            "extension_data_size" / Int16ul,
            "info" / Prefixed(Int32ul, GreedyBytes),
        ),
    ),
    "stream_properties_object" / GreedyBytes,  # optional: a whole Stream Properties Object
)
_OBJECT_LIST = Struct("objects" / GreedyRange(LazyBound(lambda: ASF_OBJECT)), Terminated)
HEADER_EXTENSION = Struct(
    "reserved_field_1" / Const(RESERVED_1_GUID.bytes_le),
    "reserved_field_2" / Const(6, Int16ul),
    "data" / Prefixed(Int32ul, _OBJECT_LIST),
)
ASF_OBJECT = Struct(
    "guid" / Guid,
    "body" / Prefixed(
        _OBJECT_SIZE,
        Switch(
            this.guid,
            {
                FILE_PROPERTIES_GUID: FILE_PROPERTIES,
                STREAM_PROPERTIES_GUID: STREAM_PROPERTIES,
                STREAM_BITRATE_PROPERTIES_GUID: STREAM_BITRATE_PROPERTIES,
                BITRATE_MUTUAL_EXCLUSION_GUID: BITRATE_MUTUAL_EXCLUSION,
                HEADER_EXTENSION_GUID: HEADER_EXTENSION,
                EXTENDED_STREAM_PROPERTIES_GUID: EXTENDED_STREAM_PROPERTIES,
                CONTENT_DESCRIPTION_GUID: CONTENT_DESCRIPTION,
                CODEC_LIST_GUID: CODEC_LIST,
            },
            default=GreedyBytes,  # padding and every object not modelled here: kept as bytes
        ),
    ),
)
"""Any object: GUID, size (GUID and size included), body."""

HEADER_OBJECT = Struct(
    "guid" / Const(HEADER_OBJECT_GUID.bytes_le),
    "body" / Prefixed(
        _OBJECT_SIZE,
        Struct(
            "count" / Rebuild(Int32ul, len_(this.objects)),
            "reserved1" / Default(Int8ul, 1),
            "reserved2" / Const(b"\x02"),  # readers must refuse other values
            "objects" / Array(this.count, ASF_OBJECT),
            Terminated,
        ),
    ),
)
DATA_OBJECT_HEADER = Struct(
    "guid" / Const(DATA_OBJECT_GUID.bytes_le),
    "size" / Int64ul,
    "file_id" / Guid,
    "total_data_packets" / Int64ul,
    "reserved" / Const(0x0101, Int16ul),
)

# --- construct declarations: data packets ----------------------------------------------------

ERROR_CORRECTION = Struct(
    "flags" / Int8ul,  # 0x80 present, 0x60 length type (must be 0), 0x0F data length
    "data" / Bytes(this.flags & 0x0F),
)
PACKET_HEADER = Struct(
    "first" / Peek(Int8ul),  # bit 7 set: error correction data come first
    "error_correction" / If(
        lambda ctx: ctx.first & 0x80 if ctx._parsing else ctx.error_correction is not None,
        ERROR_CORRECTION,
    ),
    "length_type_flags" / Int8ul,
    "property_flags" / Int8ul,
    "packet_length" / _var((this.length_type_flags >> 5) & 3),
    "sequence" / _var((this.length_type_flags >> 1) & 3),
    "padding_length" / _var((this.length_type_flags >> 3) & 3),
    "send_time" / Int32ul,
    "duration" / Int16ul,
    "size" / Tell,
)
"""Error correction and payload parsing information, up to the first payload."""

_PAYLOAD_FIELDS = (
    "stream" / Int8ul,  # bit 7 key frame, bits 0-6 stream number
    "media_object_number" / _var(lambda ctx: (ctx._params.property_flags >> 4) & 3),
    "offset" / _var(lambda ctx: (ctx._params.property_flags >> 2) & 3),
    "replicated_data_length" / Rebuild(
        _var(lambda ctx: ctx._params.property_flags & 3), len_(this.replicated_data)
    ),
    "replicated_data" / Bytes(this.replicated_data_length),
)
SINGLE_PAYLOAD = Struct(*_PAYLOAD_FIELDS, "data" / GreedyBytes)
MULTIPLE_PAYLOADS = Struct(
    "payload_flags" / Int8ul,  # bits 0-5 count, bits 6-7 size code of the payload lengths
    "payloads" / Array(
        this.payload_flags & 0x3F,
        Struct(
            *_PAYLOAD_FIELDS,
            "payload_length" / Rebuild(
                _var(lambda ctx: (ctx._.payload_flags >> 6) & 3), len_(this.data)
            ),
            "data" / Bytes(this.payload_length),
        ),
    ),
)
"""Payloads of a packet, parsed with the packet's ``property_flags`` as a context parameter."""

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_TIMES = struct.Struct("<IH")
_VAR_SIZES: Final = (0, 1, 2, 4)
_VAR_MAX: Final = (0, 0xFF, 0xFFFF, 0xFFFFFFFF)

# --- typed header objects ---------------------------------------------------------------------


def _fields_of(cls: type, c: Any) -> dict[str, Any]:
    return {f.name: c[f.name] for f in fields(cls)}


@dataclass(frozen=True, slots=True)
class FileProperties:
    """File Properties Object: packet size, packet count, duration, preroll, broadcast flag."""

    GUID: ClassVar[uuid.UUID] = FILE_PROPERTIES_GUID
    file_id: uuid.UUID
    file_size: int
    creation_date: int
    data_packets_count: int
    play_duration: int
    send_duration: int
    preroll: int
    flags: int
    min_data_packet_size: int
    max_data_packet_size: int
    max_bitrate: int

    @property
    def is_broadcast(self) -> bool:
        """Live: sizes, counts and durations are not valid."""
        return bool(self.flags & 1)

    @property
    def seekable(self) -> bool:
        """The seekable flag."""
        return bool(self.flags & 2)

    @property
    def duration(self) -> float:
        """Seconds of media: play duration less preroll (what ffprobe shows per stream)."""
        return max(0.0, self.play_duration / 1e7 - self.preroll / 1e3)


@dataclass(frozen=True, slots=True)
class WaveFormat:
    """WAVEFORMATEX of an audio stream."""

    codec_id: int
    channels: int
    samples_per_second: int
    average_bytes_per_second: int
    block_alignment: int
    bits_per_sample: int
    codec_specific_data: bytes


@dataclass(frozen=True, slots=True)
class VideoFormat:
    """The parts of a video stream's type-specific data a cache cares about."""

    width: int
    height: int
    compression: bytes  # the FourCC, e.g. b"WMV2"
    bits_per_pixel: int
    codec_specific_data: bytes


@dataclass(frozen=True, slots=True)
class StreamProperties:
    """Stream Properties Object: one stream's number, type and codec data."""

    GUID: ClassVar[uuid.UUID] = STREAM_PROPERTIES_GUID
    stream_type: uuid.UUID
    error_correction_type: uuid.UUID
    time_offset: int
    flags: int
    reserved: int
    type_specific_data: bytes
    error_correction_data: bytes

    @property
    def number(self) -> int:
        """The stream number, 1..127."""
        return self.flags & 0x7F

    @property
    def encrypted(self) -> bool:
        """The encrypted content flag."""
        return bool(self.flags & 0x8000)

    @property
    def kind(self) -> str:
        """"audio", "video", "command", ... or "unknown"."""
        return STREAM_KINDS.get(self.stream_type, "unknown")

    @property
    def audio(self) -> WaveFormat | None:
        """The WAVEFORMATEX of an audio stream (None for other kinds or unreadable data)."""
        if self.stream_type != AUDIO_MEDIA_GUID:
            return None
        try:
            c = WAVE_FORMAT.parse(self.type_specific_data)
        except _PARSE_ERRORS:
            return None
        return WaveFormat(**_fields_of(WaveFormat, c))

    @property
    def video(self) -> VideoFormat | None:
        """Size and FourCC of a video stream (None for other kinds or unreadable data)."""
        if self.stream_type != VIDEO_MEDIA_GUID:
            return None
        try:
            c = VIDEO_FORMAT.parse(self.type_specific_data)
        except _PARSE_ERRORS:
            return None
        f = c.format
        return VideoFormat(f.width, f.height, f.compression, f.bits_per_pixel,
                           f.codec_specific_data)


@dataclass(frozen=True, slots=True)
class StreamBitrateProperties:
    """Stream Bitrate Properties Object: ``(flags, average bit rate)`` per stream."""

    GUID: ClassVar[uuid.UUID] = STREAM_BITRATE_PROPERTIES_GUID
    records: tuple[tuple[int, int], ...]

    @property
    def bitrates(self) -> dict[int, int]:
        """Average bit rate by stream number."""
        return {flags & 0x7F: rate for flags, rate in self.records}


@dataclass(frozen=True, slots=True)
class BitrateMutualExclusion:
    """Bitrate Mutual Exclusion Object: streams of which a player picks one."""

    GUID: ClassVar[uuid.UUID] = BITRATE_MUTUAL_EXCLUSION_GUID
    exclusion_type: uuid.UUID
    stream_numbers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ExtendedStreamProperties:
    """Extended Stream Properties Object (inside the Header Extension)."""

    GUID: ClassVar[uuid.UUID] = EXTENDED_STREAM_PROPERTIES_GUID
    stream_number: int
    data_bitrate: int
    start_time: int = 0
    end_time: int = 0
    buffer_size: int = 0
    initial_buffer_fullness: int = 0
    alternate_data_bitrate: int = 0
    alternate_buffer_size: int = 0
    alternate_initial_buffer_fullness: int = 0
    maximum_object_size: int = 0
    flags: int = 0
    stream_language_id_index: int = 0
    average_time_per_frame: int = 0
    stream_names: tuple[tuple[int, str], ...] = ()
    payload_extension_systems: tuple[tuple[uuid.UUID, int, bytes], ...] = ()
    stream_properties: StreamProperties | None = None  # a stream declared only in here


@dataclass(frozen=True, slots=True)
class ContentDescription:
    """Content Description Object: title, author, copyright, description, rating."""

    GUID: ClassVar[uuid.UUID] = CONTENT_DESCRIPTION_GUID
    title: str = ""
    author: str = ""
    copyright: str = ""
    description: str = ""
    rating: str = ""


@dataclass(frozen=True, slots=True)
class CodecEntry:
    """One entry of the Codec List Object."""

    type: int
    name: str
    description: str
    information: bytes


@dataclass(frozen=True, slots=True)
class CodecList:
    """Codec List Object: what a player shows; not tied to stream numbers."""

    GUID: ClassVar[uuid.UUID] = CODEC_LIST_GUID
    entries: tuple[CodecEntry, ...]


@dataclass(frozen=True, slots=True)
class PaddingObject:
    """Padding Object: room to grow the header in place."""

    GUID: ClassVar[uuid.UUID] = PADDING_GUID
    data: bytes


@dataclass(frozen=True, slots=True)
class UnknownObject:
    """Any object not modelled here (metadata, extended content description...), as bytes."""

    guid: uuid.UUID
    data: bytes


@dataclass(frozen=True, slots=True)
class HeaderExtension:
    """Header Extension Object and the objects inside it."""

    GUID: ClassVar[uuid.UUID] = HEADER_EXTENSION_GUID
    objects: tuple[HeaderObject, ...] = ()


HeaderObject = (
    FileProperties | StreamProperties | StreamBitrateProperties | BitrateMutualExclusion
    | HeaderExtension | ExtendedStreamProperties | ContentDescription | CodecList
    | PaddingObject | UnknownObject
)


def _decode_object(c: Any) -> HeaderObject:
    guid, body = c.guid, c.body
    if guid == FILE_PROPERTIES_GUID:
        return FileProperties(**_fields_of(FileProperties, body))
    if guid == STREAM_PROPERTIES_GUID:
        return StreamProperties(**_fields_of(StreamProperties, body))
    if guid == STREAM_BITRATE_PROPERTIES_GUID:
        return StreamBitrateProperties(tuple((r.flags, r.average_bitrate) for r in body.records))
    if guid == BITRATE_MUTUAL_EXCLUSION_GUID:
        return BitrateMutualExclusion(body.exclusion_type, tuple(body.stream_numbers))
    if guid == HEADER_EXTENSION_GUID:
        return HeaderExtension(tuple(_decode_object(o) for o in body.data.objects))
    if guid == EXTENDED_STREAM_PROPERTIES_GUID:
        values = _fields_of(ExtendedStreamProperties, body | {"stream_properties": None})
        values["stream_names"] = tuple((n.language_id_index, n.name) for n in body.stream_names)
        values["payload_extension_systems"] = tuple(
            (s.extension_system_id, s.extension_data_size, s.info)
            for s in body.payload_extension_systems
        )
        if body.stream_properties_object:
            inner = _decode_object(ASF_OBJECT.parse(body.stream_properties_object))
            if not isinstance(inner, StreamProperties):
                raise ConstructError("Extended Stream Properties embed a non-stream object")
            values["stream_properties"] = inner
        return ExtendedStreamProperties(**values)
    if guid == CONTENT_DESCRIPTION_GUID:
        return ContentDescription(**_fields_of(ContentDescription, body))
    if guid == CODEC_LIST_GUID:
        return CodecList(tuple(CodecEntry(**_fields_of(CodecEntry, e)) for e in body.entries))
    if guid == PADDING_GUID:
        return PaddingObject(body)
    return UnknownObject(guid, body)


def _encode_object(obj: HeaderObject) -> dict[str, Any]:
    body: Any
    if isinstance(obj, UnknownObject):
        return {"guid": obj.guid, "body": obj.data}
    if isinstance(obj, PaddingObject):
        body = obj.data
    elif isinstance(obj, StreamBitrateProperties):
        body = {"records": [{"flags": f, "average_bitrate": r} for f, r in obj.records]}
    elif isinstance(obj, BitrateMutualExclusion):
        body = {"exclusion_type": obj.exclusion_type, "stream_numbers": list(obj.stream_numbers)}
    elif isinstance(obj, HeaderExtension):
        body = {"data": {"objects": [_encode_object(o) for o in obj.objects]}}
    elif isinstance(obj, ExtendedStreamProperties):
        body = {f.name: getattr(obj, f.name) for f in fields(obj)}
        body["stream_names"] = [
            {"language_id_index": i, "name": n} for i, n in obj.stream_names
        ]
        body["payload_extension_systems"] = [
            {"extension_system_id": g, "extension_data_size": s, "info": i}
            for g, s, i in obj.payload_extension_systems
        ]
        body["stream_properties_object"] = (
            ASF_OBJECT.build(_encode_object(obj.stream_properties))
            if obj.stream_properties is not None else b""
        )
    elif isinstance(obj, CodecList):
        body = {"entries": [{f.name: getattr(e, f.name) for f in fields(e)} for e in obj.entries]}
    else:
        body = {f.name: getattr(obj, f.name) for f in fields(obj)}
    return {"guid": obj.GUID, "body": body}


# --- the header ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataObjectHeader:
    """The fixed 50-byte start of the Data Object (MMS sends it with the header)."""

    file_id: uuid.UUID
    total_data_packets: int
    size: int  # of the whole Data Object: 50 + packets (0 allowed while broadcasting)


@dataclass(frozen=True, slots=True)
class AsfStream:
    """One stream as a cache sees it."""

    number: int
    kind: str
    bitrate: int | None  # as ffmpeg derives it (None where ffprobe says N/A)
    codec: str  # video FourCC ("WMV2") or audio format tag ("0x0161")
    properties: StreamProperties


@dataclass(frozen=True, slots=True)
class AsfHeader:
    """A parsed ASF file header.

    ``raw`` is what MMS sends as the header: the Header Object plus, when present, the 50-byte
    Data Object header (in a file the data packets start right after it, at ``len(raw)``).
    """

    objects: tuple[HeaderObject, ...]
    file_properties: FileProperties
    streams: tuple[AsfStream, ...]
    data: DataObjectHeader | None
    raw: bytes

    @property
    def is_broadcast(self) -> bool:
        """Live content (File Properties broadcast flag)."""
        return self.file_properties.is_broadcast

    @property
    def packet_size(self) -> int:
        """The fixed data packet size."""
        return self.file_properties.max_data_packet_size

    @property
    def packet_count(self) -> int:
        """Data packets in the file (the Data Object's count when present)."""
        if self.data is not None and self.data.total_data_packets:
            return self.data.total_data_packets
        return self.file_properties.data_packets_count

    @property
    def duration(self) -> float:
        """Seconds of media (play duration less preroll)."""
        return self.file_properties.duration

    @property
    def preroll(self) -> int:
        """Milliseconds a player buffers before it starts (send times are offset by it)."""
        return self.file_properties.preroll

    @property
    def stream_numbers(self) -> frozenset[int]:
        """Every stream number the header declares."""
        return frozenset(s.number for s in self.streams)

    @property
    def data_offset(self) -> int:
        """Where the first data packet starts in a file (needs the Data Object header)."""
        if self.data is None:
            raise MmsProtocolError("ASF header has no Data Object header")
        return len(self.raw)

    def stream(self, number: int) -> AsfStream:
        """The stream with ``number`` (KeyError if there is none)."""
        for s in self.streams:
            if s.number == number:
                return s
        raise KeyError(number)


def _walk(objects: Iterable[HeaderObject]) -> Iterator[HeaderObject]:
    for obj in objects:
        yield obj
        if isinstance(obj, HeaderExtension):
            yield from _walk(obj.objects)


def _streams(objects: tuple[HeaderObject, ...]) -> tuple[AsfStream, ...]:
    props: list[StreamProperties] = []
    ext_rates: dict[int, int] = {}
    avg_rates: dict[int, int] = {}
    for obj in _walk(objects):
        if isinstance(obj, StreamProperties):
            props.append(obj)
        elif isinstance(obj, ExtendedStreamProperties):
            ext_rates[obj.stream_number] = obj.data_bitrate
            if obj.stream_properties is not None:
                props.append(obj.stream_properties)
        elif isinstance(obj, StreamBitrateProperties):
            avg_rates.update(obj.bitrates)
    streams = []
    for p in props:
        audio, video = p.audio, p.video
        # ffmpeg's order: the codec's own rate (WAVEFORMATEX), then Extended Stream Properties
        rate = audio.average_bytes_per_second * 8 if audio is not None else 0
        rate = rate or ext_rates.get(p.number) or avg_rates.get(p.number) or 0
        if video is not None:
            codec = video.compression.decode("latin-1")
        elif audio is not None:
            codec = f"0x{audio.codec_id:04x}"
        else:
            codec = ""
        streams.append(AsfStream(p.number, p.kind, rate or None, codec, p))
    numbers = [s.number for s in streams]
    if len(set(numbers)) != len(numbers) or 0 in numbers:
        raise MmsProtocolError(f"ASF header declares stream numbers {numbers}")
    return tuple(streams)


def parse_asf_header(data: bytes) -> AsfHeader:
    """Parse the Header Object at the start of ``data`` (a file, or MMS's header bytes).

    A Data Object header right after it is parsed too. Raises MmsProtocolError on bad input,
    including a packet size that is not fixed (MMS needs fixed-size packets).
    """
    try:
        if len(data) < 30 or data[:16] != HEADER_OBJECT_GUID.bytes_le:
            raise MmsProtocolError("data does not start with an ASF Header Object")
        size = int.from_bytes(data[16:24], "little")
        if not 30 <= size <= min(len(data), MAX_HEADER_SIZE):
            raise MmsProtocolError(f"ASF Header Object of {size} bytes in {len(data)} bytes")
        c = HEADER_OBJECT.parse(data[:size])
        objects = tuple(_decode_object(o) for o in c.body.objects)
        props = [o for o in objects if isinstance(o, FileProperties)]
        if len(props) != 1:
            raise MmsProtocolError(f"ASF header has {len(props)} File Properties Objects")
        fp = props[0]
        if fp.min_data_packet_size != fp.max_data_packet_size or fp.max_data_packet_size < 16:
            raise MmsProtocolError(
                f"ASF packet size not fixed: {fp.min_data_packet_size}..{fp.max_data_packet_size}"
            )
        streams = _streams(objects)
        data_header = None
        end = size
        if data[size : size + 16] == DATA_OBJECT_GUID.bytes_le:
            d = DATA_OBJECT_HEADER.parse(data[size : size + DATA_OBJECT_HEADER_SIZE])
            data_header = DataObjectHeader(d.file_id, d.total_data_packets, d.size)
            end += DATA_OBJECT_HEADER_SIZE
        return AsfHeader(objects, fp, streams, data_header, bytes(data[:end]))
    except _PARSE_ERRORS as exc:
        raise MmsProtocolError(f"malformed ASF header: {exc}") from exc


def build_asf_header(
    objects: Iterable[HeaderObject], *, data: DataObjectHeader | None = None
) -> bytes:
    """The Header Object holding ``objects`` (and the Data Object header when given).

    ``build_asf_header(h.objects, data=h.data) == h.raw`` for headers this module can model
    losslessly (every header ffmpeg writes).
    """
    try:
        out = HEADER_OBJECT.build(
            {"body": {"objects": [_encode_object(o) for o in objects]}}
        )
        if data is not None:
            out += DATA_OBJECT_HEADER.build(
                {"size": data.size, "file_id": data.file_id,
                 "total_data_packets": data.total_data_packets}
            )
        return out
    except (ConstructError, KeyError, TypeError, ValueError, OverflowError, struct.error) as exc:
        raise LocalProtocolError(f"cannot build ASF header: {exc}") from exc


def _keep_object(obj: HeaderObject, keep: frozenset[int]) -> HeaderObject | None:
    if isinstance(obj, StreamProperties):
        return obj if obj.number in keep else None
    if isinstance(obj, ExtendedStreamProperties):
        return obj if obj.stream_number in keep else None
    if isinstance(obj, StreamBitrateProperties):
        return replace(obj, records=tuple(r for r in obj.records if r[0] & 0x7F in keep))
    if isinstance(obj, BitrateMutualExclusion):
        return replace(obj, stream_numbers=tuple(n for n in obj.stream_numbers if n in keep))
    if isinstance(obj, HeaderExtension):
        inner = (_keep_object(o, keep) for o in obj.objects)
        return HeaderExtension(tuple(o for o in inner if o is not None))
    return obj


def header_for_streams(
    header: bytes | AsfHeader, keep: Iterable[int], *, strip: bool = False,
    packet_count: int | None = None,
) -> bytes:
    """The header to send with data packets filtered to the streams ``keep``.

    MMS players choose streams (0x33) *after* reading the header, so what a Windows Media server
    sends, and what the cached variant must send, is the header unchanged: by default this only
    checks that ``keep`` names streams of the header and returns its bytes. ffmpeg and VLC play
    such a file (all streams declared, data for some) as well as the original.

    ``strip=True`` instead removes the other streams' objects (Stream Properties, Extended Stream
    Properties, their bit-rate and mutual-exclusion entries), for a stand-alone ASF file of the
    variant; ``packet_count`` then replaces the packet counts (filtering drops empty packets).
    """
    h = header if isinstance(header, AsfHeader) else parse_asf_header(header)
    wanted = frozenset(keep)
    if not wanted or not wanted <= h.stream_numbers:
        raise LocalProtocolError(
            f"streams {sorted(wanted)} not a subset of {sorted(h.stream_numbers)}"
        )
    if not strip:
        return h.raw
    objects = []
    for obj in h.objects:
        kept = _keep_object(obj, wanted)
        if isinstance(kept, FileProperties) and packet_count is not None:
            kept = replace(kept, data_packets_count=packet_count)
        if kept is not None:
            objects.append(kept)
    data = h.data
    if data is not None and packet_count is not None:
        data = replace(data, total_data_packets=packet_count,
                       size=DATA_OBJECT_HEADER_SIZE + packet_count * h.packet_size)
    return build_asf_header(objects, data=data)


# --- data packets -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AsfPayload:
    """One payload: a media object, or a fragment of one, of one stream."""

    stream_number: int
    key_frame: bool
    media_object_number: int
    offset: int  # into the media object; the presentation time (ms) for compressed payloads
    replicated_data: bytes
    data: bytes

    @property
    def compressed(self) -> bool:
        """``data`` is a run of (u8 size, whole media object) sub-payloads."""
        return len(self.replicated_data) == 1

    @property
    def media_object_size(self) -> int | None:
        """Size of the whole media object, from the replicated data."""
        return _U32.unpack_from(self.replicated_data)[0] if len(self.replicated_data) >= 8 else None

    @property
    def presentation_time(self) -> int | None:
        """Presentation time in ms (preroll included), from the replicated data."""
        if self.compressed:
            return self.offset
        if len(self.replicated_data) >= 8:
            return _U32.unpack_from(self.replicated_data, 4)[0]
        return None

    @property
    def starts_media_object(self) -> bool:
        """This payload holds the start of a media object (ffmpeg emits one packet per object)."""
        return self.compressed or self.offset == 0

    def sub_payloads(self) -> tuple[bytes, ...]:
        """The media objects inside a compressed payload (one-element tuple otherwise)."""
        if not self.compressed:
            return (self.data,)
        out, pos, data = [], 0, self.data
        while pos < len(data):
            size = data[pos]
            if pos + 1 + size > len(data):
                raise MmsProtocolError("ASF compressed payload overruns its data")
            out.append(data[pos + 1 : pos + 1 + size])
            pos += 1 + size
        return tuple(out)


@dataclass(frozen=True, slots=True)
class AsfDataPacket:
    """One data packet. The flags fields keep the field sizes so a rebuild is byte-exact."""

    send_time: int  # ms
    duration: int  # ms
    payloads: tuple[AsfPayload, ...]
    multiple_payloads: bool = True
    error_correction: bytes | None = b"\x00\x00"  # ECC data (flags byte rebuilt); None: absent
    sequence: int = 0
    padding_length: int = 0
    packet_length: int | None = None  # the explicit field, None when absent
    length_type_flags: int = 0x01  # sequence / padding / packet length size codes, bit 0
    property_flags: int = 0x5D  # ffmpeg's: byte object number, dword offset, byte replicated
    payload_flags: int = 0x80  # size code of the payload lengths (bits 6-7): 0x80 = word


def iter_data_packets(data: bytes, packet_size: int, count: int | None = None) -> Iterator[bytes]:
    """Cut the data packets out of the bytes that follow the Data Object header.

    With ``count`` exactly that many packets must be there (a file's index may follow);
    without, ``data`` must hold whole packets only.
    """
    if packet_size <= 0:
        raise LocalProtocolError(f"bad ASF packet size {packet_size}")
    if count is None:
        count, rest = divmod(len(data), packet_size)
        if rest:
            raise MmsProtocolError(f"{rest} bytes after the last whole ASF packet")
    elif count * packet_size > len(data):
        raise MmsProtocolError(f"{count} ASF packets of {packet_size} bytes need more data")
    view = memoryview(data)
    for i in range(count):
        yield bytes(view[i * packet_size : (i + 1) * packet_size])


def _region_end(length: int | None, padding: int, size: int) -> int:
    packet_length = length if length else size
    if packet_length > size or padding >= packet_length:
        raise MmsProtocolError(
            f"ASF packet length {packet_length}, padding {padding}, for {size} bytes"
        )
    return packet_length - padding


def parse_data_packet(data: bytes, packet_size: int | None = None) -> AsfDataPacket:
    """Parse one data packet (``packet_size`` defaults to ``len(data)``)."""
    size = len(data) if packet_size is None else packet_size
    try:
        if size > len(data) or size < 1:
            raise MmsProtocolError(f"ASF packet of {len(data)} bytes, {size} expected")
        h = PACKET_HEADER.parse(data)
        ecc = h.error_correction
        if ecc is not None and ecc.flags & 0x70:
            raise MmsProtocolError(f"ASF error correction flags 0x{ecc.flags:02x} not supported")
        if (h.property_flags >> 6) != 1:
            raise MmsProtocolError("ASF stream number field is not one byte")
        end = _region_end(
            h.packet_length if (h.length_type_flags >> 5) & 3 else None, h.padding_length, size
        )
        if h.size > end:
            raise MmsProtocolError("ASF payload parsing information overruns the packet")
        region = data[h.size : end]
        multiple = bool(h.length_type_flags & 1)
        payload_flags = 0x80
        if multiple:
            p = MULTIPLE_PAYLOADS.parse(region, property_flags=h.property_flags)
            payloads, payload_flags = p.payloads, p.payload_flags
        else:
            payloads = [SINGLE_PAYLOAD.parse(region, property_flags=h.property_flags)]
        return AsfDataPacket(
            send_time=h.send_time,
            duration=h.duration,
            payloads=tuple(
                AsfPayload(
                    stream_number=c.stream & 0x7F,
                    key_frame=bool(c.stream & 0x80),
                    media_object_number=c.media_object_number,
                    offset=c.offset,
                    replicated_data=c.replicated_data,
                    data=c.data,
                )
                for c in payloads
            ),
            multiple_payloads=multiple,
            error_correction=None if ecc is None else ecc.data,
            sequence=h.sequence,
            padding_length=h.padding_length,
            packet_length=h.packet_length if (h.length_type_flags >> 5) & 3 else None,
            length_type_flags=h.length_type_flags,
            property_flags=h.property_flags,
            payload_flags=payload_flags,
        )
    except _PARSE_ERRORS as exc:
        raise MmsProtocolError(f"malformed ASF data packet: {exc}") from exc


def _put_var(out: bytearray, code: int, value: int) -> None:
    if value > _VAR_MAX[code]:
        raise LocalProtocolError(f"value {value} does not fit a {_VAR_SIZES[code]}-byte field")
    if code:
        out += value.to_bytes(_VAR_SIZES[code], "little")


def _packet_head(
    ecc: bytes, ltf: int, pf: int, sequence: int, send_time: int, duration: int,
    payload_flags: int | None, payload_bytes: int, packet_size: int,
) -> bytes:
    """Error correction + payload parsing information with the padding that fills the packet.

    Keeps the padding length size code of ``ltf`` when it fits, else takes the smallest that
    does (the padding grows when payloads are dropped).
    """
    for code in ((ltf >> 3) & 3, 0, 1, 2, 3):
        fixed = (
            len(ecc) + 2 + _VAR_SIZES[(ltf >> 5) & 3] + _VAR_SIZES[(ltf >> 1) & 3]
            + _VAR_SIZES[code] + 6 + (payload_flags is not None)
        )
        padding = packet_size - fixed - payload_bytes
        if padding < 0:
            raise LocalProtocolError(f"ASF payloads need {fixed + payload_bytes} > {packet_size}")
        if padding <= _VAR_MAX[code] and (code or not padding):
            break
    else:  # pragma: no cover - code 3 always fits a packet size below 4 GiB
        raise LocalProtocolError("no padding length size fits")
    new_ltf = (ltf & ~0x18) | (code << 3)
    out = bytearray(ecc)
    out += bytes((new_ltf, pf))
    if (ltf >> 5) & 3:  # an explicit packet length: the padded size
        _put_var(out, (ltf >> 5) & 3, packet_size)
    _put_var(out, (ltf >> 1) & 3, sequence)
    _put_var(out, code, padding)
    out += _TIMES.pack(send_time, duration)
    if payload_flags is not None:
        out.append(payload_flags)
    return bytes(out)


def build_data_packet(packet: AsfDataPacket, packet_size: int) -> bytes:
    """Encode ``packet``, zero-padded to ``packet_size`` (padding length rebuilt to fit).

    The padding length and an explicit packet length field are recomputed; every other field
    keeps the size codes in ``packet``'s flags.
    """
    pf = packet.property_flags
    multiple = packet.multiple_payloads
    if not multiple and len(packet.payloads) != 1:
        raise LocalProtocolError("a single-payload ASF packet needs exactly one payload")
    if multiple and not 0 < len(packet.payloads) <= 0x3F:
        raise LocalProtocolError(f"{len(packet.payloads)} payloads in one ASF packet")
    body = bytearray()
    length_code = (packet.payload_flags >> 6) & 3
    for p in packet.payloads:
        if not 0 < p.stream_number <= 0x7F:
            raise LocalProtocolError(f"ASF stream number {p.stream_number}")
        body.append(p.stream_number | (0x80 if p.key_frame else 0))
        _put_var(body, (pf >> 4) & 3, p.media_object_number)
        _put_var(body, (pf >> 2) & 3, p.offset)
        _put_var(body, pf & 3, len(p.replicated_data))
        body += p.replicated_data
        if multiple:
            if not length_code:
                raise LocalProtocolError("multiple ASF payloads need a payload length size")
            _put_var(body, length_code, len(p.data))
        body += p.data
    ecc = b"" if packet.error_correction is None else bytes(
        (0x80 | len(packet.error_correction),)) + packet.error_correction
    if len(ecc) > 16:
        raise LocalProtocolError("ASF error correction data longer than 15 bytes")
    payload_flags = (packet.payload_flags & 0xC0) | len(packet.payloads) if multiple else None
    ltf = (packet.length_type_flags & ~1) | int(multiple)
    head = _packet_head(
        ecc, ltf, pf, packet.sequence, packet.send_time, packet.duration, payload_flags,
        len(body), packet_size,
    )
    out = head + bytes(body)
    return out + bytes(packet_size - len(out))


# --- the hot path: struct-based scanning and filtering -----------------------------------------


class PayloadSpan(NamedTuple):
    """Where one payload sits: its stream byte and ``data[start:end]`` (fields + data)."""

    stream: int  # the raw byte: bit 7 key frame, bits 0-6 stream number
    start: int
    end: int


class _Layout(NamedTuple):
    ecc: bytes
    length_type_flags: int
    property_flags: int
    sequence: int
    send_time: int
    duration: int
    payload_flags: int | None
    spans: list[PayloadSpan]


def _read(data: bytes, pos: int, code: int) -> tuple[int, int]:
    if code == 0:
        return 0, pos
    if code == 1:
        return data[pos], pos + 1
    if code == 2:
        return _U16.unpack_from(data, pos)[0], pos + 2
    return _U32.unpack_from(data, pos)[0], pos + 4


def _layout(data: bytes, size: int) -> _Layout:
    pos, ecc = 0, b""
    if data[0] & 0x80:
        flags = data[0]
        if flags & 0x70:
            raise MmsProtocolError(f"ASF error correction flags 0x{flags:02x} not supported")
        pos = 1 + (flags & 0x0F)
        ecc = bytes(data[:pos])
    ltf, pf = data[pos], data[pos + 1]
    if (pf >> 6) != 1:
        raise MmsProtocolError("ASF stream number field is not one byte")
    length, pos = _read(data, pos + 2, (ltf >> 5) & 3)
    sequence, pos = _read(data, pos, (ltf >> 1) & 3)
    padding, pos = _read(data, pos, (ltf >> 3) & 3)
    send_time, duration = _TIMES.unpack_from(data, pos)
    pos += 6
    end = _region_end(length if (ltf >> 5) & 3 else None, padding, size)
    mo_code, off_code, rep_code = (pf >> 4) & 3, (pf >> 2) & 3, pf & 3
    spans: list[PayloadSpan] = []
    if ltf & 1:
        payload_flags = data[pos]
        len_code = payload_flags >> 6
        count = payload_flags & 0x3F
        pos += 1
        for _ in range(count):
            start = pos
            pos += 1 + _VAR_SIZES[mo_code] + _VAR_SIZES[off_code]
            replicated, pos = _read(data, pos, rep_code)
            pos += replicated
            payload_len, pos = _read(data, pos, len_code)
            pos += payload_len
            if pos > end:
                raise MmsProtocolError("ASF payload overruns its packet")
            spans.append(PayloadSpan(data[start], start, pos))
    else:
        payload_flags = None
        fixed = pos + 1 + _VAR_SIZES[mo_code] + _VAR_SIZES[off_code]
        replicated, after = _read(data, fixed, rep_code)
        if after + replicated > end:
            raise MmsProtocolError("ASF payload overruns its packet")
        spans.append(PayloadSpan(data[pos], pos, end))
    return _Layout(ecc, ltf, pf, sequence, send_time, duration, payload_flags, spans)


def scan_payloads(data: bytes, packet_size: int | None = None) -> list[PayloadSpan]:
    """The payloads of a packet without copying them (``struct`` only: per-packet hot path)."""
    try:
        return _layout(data, len(data) if packet_size is None else packet_size).spans
    except (IndexError, struct.error) as exc:
        raise MmsProtocolError(f"malformed ASF data packet: {exc}") from exc


def packet_send_time(packet: bytes | memoryview) -> int:
    """The send time (ms) of a data packet, read without walking its payloads.

    A cache fill stamps every packet with it, so the replay keeps the origin's own pacing.
    """
    try:
        pos = 0
        if packet[0] & 0x80:
            if packet[0] & 0x70:
                flags = packet[0]
                raise MmsProtocolError(f"ASF error correction flags 0x{flags:02x} not supported")
            pos = 1 + (packet[0] & 0x0F)
        ltf = packet[pos]
        pos += 2 + sum(_VAR_SIZES[(ltf >> shift) & 3] for shift in (5, 1, 3))
        return int(_U32.unpack_from(packet, pos)[0])
    except (IndexError, struct.error) as exc:
        raise MmsProtocolError(f"malformed ASF data packet: {exc}") from exc


def filter_streams(packet: bytes, keep: frozenset[int], packet_size: int) -> bytes | None:
    """``packet`` with only the payloads of the streams in ``keep``, padded to ``packet_size``.

    Returns the packet itself when every payload stays and it already has that size, and None
    when no payload stays ([MS-MMSP] 3.2.5.11.1: such a packet is not sent at all). Payload
    bytes are copied verbatim; only the payload parsing information is rewritten.
    """
    if len(packet) > packet_size:
        raise MmsProtocolError(f"ASF packet of {len(packet)} bytes exceeds {packet_size}")
    try:
        lay = _layout(packet, len(packet))
    except (IndexError, struct.error) as exc:
        raise MmsProtocolError(f"malformed ASF data packet: {exc}") from exc
    kept = [s for s in lay.spans if s.stream & 0x7F in keep]
    if not kept:
        return None
    if len(kept) == len(lay.spans) and len(packet) == packet_size:
        return packet
    payload_flags = None if lay.payload_flags is None else (lay.payload_flags & 0xC0) | len(kept)
    payload_bytes = sum(s.end - s.start for s in kept)
    head = _packet_head(
        lay.ecc, lay.length_type_flags, lay.property_flags, lay.sequence, lay.send_time,
        lay.duration, payload_flags, payload_bytes, packet_size,
    )
    out = bytearray(head)
    for s in kept:
        out += packet[s.start : s.end]
    out += bytes(packet_size - len(out))
    return bytes(out)


def shift_times(packet: bytes, delta_ms: int, packet_size: int | None = None) -> bytes:
    """``packet`` with its send time and every payload's presentation time moved by ``delta_ms``.

    A looped live broadcast needs this: the second pass of a clip must carry later times than
    the first, or players see time run backwards. Times are u32 milliseconds and wrap. Payload
    bytes are untouched; a compressed payload's presentation time is its offset field.
    """
    if not delta_ms:
        return packet
    try:
        lay = _layout(packet, len(packet) if packet_size is None else packet_size)
        ltf, pf = lay.length_type_flags, lay.property_flags
        out = bytearray(packet)
        pos = len(lay.ecc) + 2 + sum(_VAR_SIZES[(ltf >> shift) & 3] for shift in (5, 1, 3))
        _U32.pack_into(out, pos, (lay.send_time + delta_ms) & 0xFFFFFFFF)
        mo_size, off_code, rep_code = _VAR_SIZES[(pf >> 4) & 3], (pf >> 2) & 3, pf & 3
        for span in lay.spans:
            at = span.start + 1 + mo_size
            offset, after = _read(packet, at, off_code)
            replicated, data_at = _read(packet, after, rep_code)
            if replicated == 1 and off_code:  # compressed: the offset is the presentation time
                moved = (offset + delta_ms) & _VAR_MAX[off_code]
                out[at : at + _VAR_SIZES[off_code]] = moved.to_bytes(_VAR_SIZES[off_code], "little")
            elif replicated >= 8:
                time = _U32.unpack_from(packet, data_at + 4)[0]
                _U32.pack_into(out, data_at + 4, (time + delta_ms) & 0xFFFFFFFF)
        return bytes(out)
    except (IndexError, struct.error) as exc:
        raise MmsProtocolError(f"malformed ASF data packet: {exc}") from exc
