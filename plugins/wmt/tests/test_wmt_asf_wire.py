"""ASF headers and data packets: golden tests on clips made by ffmpeg (checked with ffprobe and
ffmpeg decodes), byte-exact rebuilds, Intelligent Streaming variants, round trips, garbage."""

from __future__ import annotations

import collections
import contextlib
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wmt_peers import FFMPEG, FFPROBE, clip, ffprobe_json, framemd5

from mediacache.errors import LocalProtocolError
from mediacache_wmt import MmsProtocolError
from mediacache_wmt.wire import asf

SETTINGS = settings(
    deadline=None, max_examples=60, database=None, suppress_health_check=[HealthCheck.too_slow]
)
needs_ffmpeg = pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="needs ffmpeg and ffprobe")


def packets_of(data: bytes, h: asf.AsfHeader) -> list[bytes]:
    return list(asf.iter_data_packets(data[h.data_offset :], h.packet_size, h.packet_count))


def media_objects_per_stream(packets: list[bytes], size: int) -> collections.Counter[int]:
    """What ffmpeg makes AVPackets of: media objects (payloads at offset 0, sub-payloads)."""
    counts: collections.Counter[int] = collections.Counter()
    for packet in packets:
        for p in asf.parse_data_packet(packet, size).payloads:
            if p.starts_media_object:
                counts[p.stream_number] += len(p.sub_payloads())
    return counts


# --- golden: clips made by ffmpeg, as ffprobe sees them -------------------------------------


@pytest.mark.peers
@needs_ffmpeg
@pytest.mark.parametrize("name", ["clip.wmv", "multi.wmv"])
def test_header_matches_ffprobe(name):
    path = clip(name)
    data = path.read_bytes()
    h = asf.parse_asf_header(data)
    probe = ffprobe_json(path, "-show_streams", "-show_format")
    streams = probe["streams"]
    assert [s.kind for s in h.streams] == [s["codec_type"] for s in streams]
    assert [s.codec.lower() for s in h.streams if s.kind == "video"] == [
        s["codec_tag_string"].lower() for s in streams if s["codec_type"] == "video"]
    for ours, theirs in zip(h.streams, streams, strict=True):
        assert ours.bitrate == (int(theirs["bit_rate"]) if "bit_rate" in theirs else None)
        assert h.duration == pytest.approx(float(theirs["duration"]), abs=0.001)
        if ours.kind == "video":
            assert (ours.properties.video.width, ours.properties.video.height) == (
                theirs["width"], theirs["height"])
        else:
            assert ours.properties.audio.samples_per_second == int(theirs["sample_rate"])
    assert h.packet_size == 3200  # ffmpeg's asf muxer default
    assert h.packet_count * h.packet_size + len(h.raw) <= path.stat().st_size
    assert h.data.total_data_packets == h.file_properties.data_packets_count
    assert not h.is_broadcast
    assert h.preroll == 3100
    assert len(h.raw) == h.data_offset


@pytest.mark.peers
@needs_ffmpeg
@pytest.mark.parametrize("name", ["clip.wmv", "multi.wmv"])
def test_media_objects_per_stream_match_ffprobe_packets(name):
    path = clip(name)
    data = path.read_bytes()
    h = asf.parse_asf_header(data)
    probe = ffprobe_json(path, "-show_packets", "-show_entries", "packet=stream_index")
    expected = collections.Counter(p["stream_index"] for p in probe["packets"])
    ours = media_objects_per_stream(packets_of(data, h), h.packet_size)
    index_of = {s.number: i for i, s in enumerate(h.streams)}
    assert {index_of[n]: c for n, c in ours.items()} == dict(expected)


@pytest.mark.peers
@needs_ffmpeg
@pytest.mark.parametrize("name", ["clip.wmv", "multi.wmv"])
def test_ffmpeg_files_rebuild_byte_exact(name):
    data = clip(name).read_bytes()
    h = asf.parse_asf_header(data)
    assert asf.build_asf_header(h.objects, data=h.data) == h.raw
    assert asf.parse_asf_header(h.raw) == h
    for packet in packets_of(data, h):
        parsed = asf.parse_data_packet(packet)
        assert asf.build_data_packet(parsed, h.packet_size) == packet
        assert asf.filter_streams(packet, h.stream_numbers, h.packet_size) is packet
        spans = asf.scan_payloads(packet)
        assert [s.stream & 0x7F for s in spans] == [p.stream_number for p in parsed.payloads]


@pytest.mark.peers
@needs_ffmpeg
def test_payload_fields_of_an_ffmpeg_packet():
    data = clip("clip.wmv").read_bytes()
    h = asf.parse_asf_header(data)
    first = asf.parse_data_packet(packets_of(data, h)[0])
    assert first.error_correction == b"\0\0" and first.property_flags == 0x5D
    assert first.send_time == 0
    audio = [p for p in first.payloads if p.stream_number == 2]
    video = [p for p in first.payloads if p.stream_number == 1]
    assert audio[0].presentation_time == h.preroll
    assert audio[0].media_object_size == len(audio[0].data)
    assert video[0].key_frame and video[0].offset == 0


@pytest.mark.peers
@needs_ffmpeg
def test_built_extended_stream_properties_give_ffprobe_the_bit_rates(tmp_path):
    # ffmpeg's muxer writes no per-stream video bit rate; ffmpeg's demuxer reads it from the
    # Extended Stream Properties: add them with build_asf_header and ask ffprobe
    data = clip("multi.wmv").read_bytes()
    h = asf.parse_asf_header(data)
    rates = {1: 100_000, 2: 300_000, 3: 600_000}
    objects = []
    for obj in h.objects:
        if isinstance(obj, asf.HeaderExtension):
            esp = tuple(asf.ExtendedStreamProperties(n, r) for n, r in rates.items())
            obj = asf.HeaderExtension(obj.objects + esp)
        objects.append(obj)
    objects.append(asf.StreamBitrateProperties((*rates.items(), (4, 64_000))))
    header = asf.build_asf_header(objects, data=h.data)
    out = tmp_path / "rates.wmv"
    out.write_bytes(header + data[h.data_offset :])
    probe = ffprobe_json(out, "-show_streams")
    assert [s.get("bit_rate") for s in probe["streams"]] == ["100000", "300000", "600000",
                                                             "64000"]
    parsed = asf.parse_asf_header(header)
    assert [s.bitrate for s in parsed.streams] == [100_000, 300_000, 600_000, 64_000]
    assert parsed.objects[-1].bitrates == {1: 100_000, 2: 300_000, 3: 600_000, 4: 64_000}


# --- Intelligent Streaming: one variant = some streams of the file ---------------------------


@pytest.mark.peers
@needs_ffmpeg
@pytest.mark.parametrize("strip", [False, True], ids=["header-intact", "header-stripped"])
def test_variant_decodes_like_the_original_streams(tmp_path, strip):
    data = clip("multi.wmv").read_bytes()
    h = asf.parse_asf_header(data)
    keep = frozenset({2, 4})  # the 300k video and the audio
    kept = [k for p in packets_of(data, h)
            if (k := asf.filter_streams(p, keep, h.packet_size)) is not None]
    assert all(len(k) == h.packet_size for k in kept)
    assert len(kept) < h.packet_count  # packets with nothing selected are dropped
    header = asf.header_for_streams(data, keep, strip=strip, packet_count=len(kept))
    out = tmp_path / "variant.wmv"
    out.write_bytes(header + b"".join(kept))
    variant = asf.parse_asf_header(header)
    if strip:
        assert variant.stream_numbers == keep and variant.packet_count == len(kept)
        maps = ("0:0", "0:1")
    else:
        assert header == h.raw
        maps = ("0:1", "0:3")
    assert media_objects_per_stream(kept, h.packet_size) == {2: 75, 4: 65}
    assert framemd5(str(out), *maps) == framemd5(str(clip("multi.wmv")), "0:1", "0:3")


def test_header_for_streams_refuses_unknown_streams():
    data = synthetic_header()
    with pytest.raises(LocalProtocolError):
        asf.header_for_streams(data, {9})
    with pytest.raises(LocalProtocolError):
        asf.header_for_streams(data, set())


# --- synthetic headers and packets -----------------------------------------------------------


def file_properties(**kw) -> asf.FileProperties:
    values = dict(file_id=uuid.UUID(int=7), file_size=0, creation_date=0, data_packets_count=10,
                  play_duration=40_000_000, send_duration=10_000_000, preroll=1000, flags=2,
                  min_data_packet_size=1000, max_data_packet_size=1000, max_bitrate=500_000)
    return asf.FileProperties(**(values | kw))


def stream(number: int, kind: uuid.UUID = asf.VIDEO_MEDIA_GUID, tsd: bytes = b"") -> (
        asf.StreamProperties):
    return asf.StreamProperties(kind, asf.NO_ERROR_CORRECTION_GUID, 0, number, 0, tsd, b"")


def synthetic_header(**kw) -> bytes:
    objects = [file_properties(**kw), stream(1), stream(2), asf.HeaderExtension(()),
               asf.ContentDescription(title="t\u00e9st", author="me")]
    return asf.build_asf_header(
        objects, data=asf.DataObjectHeader(uuid.UUID(int=7), 10, 50 + 10 * 1000))


def test_synthetic_header_round_trip_and_summary():
    raw = synthetic_header()
    h = asf.parse_asf_header(raw + b"trailing packets")
    assert h.raw == raw and h.stream_numbers == {1, 2}
    assert h.duration == pytest.approx(3.0)
    assert h.objects[-1] == asf.ContentDescription(title="t\u00e9st", author="me")
    assert asf.build_asf_header(h.objects, data=h.data) == raw
    assert asf.header_for_streams(h, {1}) == raw
    stripped = asf.parse_asf_header(asf.header_for_streams(h, {2}, strip=True))
    assert stripped.stream_numbers == {2}


@pytest.mark.parametrize("kw", [dict(min_data_packet_size=10), dict(max_data_packet_size=0)])
def test_header_with_variable_packet_size_is_refused(kw):
    with pytest.raises(MmsProtocolError):
        asf.parse_asf_header(synthetic_header(**kw))


def test_duplicate_stream_numbers_are_refused():
    raw = asf.build_asf_header([file_properties(), stream(1), stream(1)])
    with pytest.raises(MmsProtocolError):
        asf.parse_asf_header(raw)


def test_filter_pads_and_rewrites_padding_length():
    payloads = tuple(
        asf.AsfPayload(n, n == 1, 0, 0, (100).to_bytes(4, "little") + bytes(4), bytes(100))
        for n in (1, 2, 3)
    )
    packet = asf.build_data_packet(asf.AsfDataPacket(5, 7, payloads), 1000)
    assert len(packet) == 1000
    filtered = asf.filter_streams(packet, frozenset({2}), 1000)
    parsed = asf.parse_data_packet(filtered)
    assert [p.stream_number for p in parsed.payloads] == [2]
    assert (parsed.send_time, parsed.duration) == (5, 7)
    assert parsed.payloads[0] == payloads[1]
    assert asf.filter_streams(packet, frozenset({9}), 1000) is None
    # a packet sent without its padding (padding length 0, as MMS over HTTP allows) gets it back
    unpadded = asf.build_data_packet(asf.AsfDataPacket(5, 7, payloads), 12 + 3 * 117)
    assert asf.parse_data_packet(unpadded).padding_length == 0
    padded = asf.filter_streams(unpadded, frozenset({1, 2, 3}), 1000)
    assert padded == packet
    with pytest.raises(MmsProtocolError):
        asf.filter_streams(packet, frozenset({1}), 999)


def test_single_payload_packet_and_compressed_payload():
    sub = bytes([3]) + b"abc" + bytes([2]) + b"de"
    single = asf.AsfDataPacket(
        1000, 0, (asf.AsfPayload(3, True, 9, 4321, b"\x05", sub),), multiple_payloads=False,
        error_correction=None, length_type_flags=0x00, property_flags=0x59,
    )
    packet = asf.build_data_packet(single, 300)
    parsed = asf.parse_data_packet(packet)
    assert parsed.payloads[0].compressed and parsed.payloads[0].presentation_time == 4321
    assert parsed.payloads[0].sub_payloads() == (b"abc", b"de")
    assert parsed.payloads[0].data[: len(sub)] == sub  # the single payload runs to the padding
    assert asf.filter_streams(packet, frozenset({3}), 300) is packet
    assert asf.filter_streams(packet, frozenset({1}), 300) is None


def test_iter_data_packets_checks_sizes():
    assert list(asf.iter_data_packets(b"ab" * 3, 2)) == [b"ab"] * 3
    assert list(asf.iter_data_packets(b"ab" * 3 + b"index", 2, count=3)) == [b"ab"] * 3
    with pytest.raises(MmsProtocolError):
        list(asf.iter_data_packets(b"abc", 2))
    with pytest.raises(MmsProtocolError):
        list(asf.iter_data_packets(b"ab", 2, count=2))


# --- hypothesis: declarations round-trip, the scanner agrees with them ------------------------

U8, U16, U32, U64 = (st.integers(0, 2**b - 1) for b in (8, 16, 32, 64))
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
NAME = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=20)
GUIDS = st.builds(uuid.UUID, int=st.integers(0, 2**128 - 1))
BYTES = st.binary(max_size=40)
STREAMS = st.builds(asf.StreamProperties, GUIDS, GUIDS, U64, U16, U32, BYTES, BYTES)
OBJECTS = st.one_of(
    STREAMS,
    st.builds(asf.StreamBitrateProperties, st.lists(st.tuples(U16, U32), max_size=5).map(tuple)),
    st.builds(asf.BitrateMutualExclusion, GUIDS, st.lists(U16, max_size=5).map(tuple)),
    st.builds(asf.ContentDescription, NAME, NAME, NAME, NAME, NAME),
    st.builds(asf.CodecList, st.lists(st.builds(asf.CodecEntry, U16, NAME, NAME, BYTES),
                                      max_size=3).map(tuple)),
    st.builds(asf.PaddingObject, BYTES),
    st.builds(asf.UnknownObject, GUIDS.filter(lambda g: g not in {
        asf.FILE_PROPERTIES_GUID, asf.STREAM_PROPERTIES_GUID, asf.HEADER_EXTENSION_GUID,
        asf.STREAM_BITRATE_PROPERTIES_GUID, asf.BITRATE_MUTUAL_EXCLUSION_GUID,
        asf.EXTENDED_STREAM_PROPERTIES_GUID, asf.CONTENT_DESCRIPTION_GUID, asf.CODEC_LIST_GUID,
        asf.PADDING_GUID}), BYTES),
    st.builds(asf.HeaderExtension, st.lists(st.builds(
        asf.ExtendedStreamProperties, U16, U32, U64, U64, U32, U32, U32, U32, U32, U32, U32,
        U16, U64, st.lists(st.tuples(U16, TEXT), max_size=2).map(tuple),
        st.lists(st.tuples(GUIDS, U16, BYTES), max_size=2).map(tuple),
        st.none() | STREAMS,
    ), max_size=2).map(tuple)),
)


@SETTINGS
@given(st.lists(OBJECTS, max_size=6))
def test_header_objects_round_trip(objects):
    fp = file_properties()
    raw = asf.build_asf_header([fp, *objects])
    decoded = asf.HEADER_OBJECT.parse(raw)
    assert tuple(asf._decode_object(o) for o in decoded.body.objects) == (fp, *objects)
    assert asf.build_asf_header(tuple(asf._decode_object(o) for o in decoded.body.objects)) == raw


PAYLOAD_PROPS = st.sampled_from([0x5D, 0x55, 0x59, 0x7F, 0x40, 0x6A])


@st.composite
def data_packets(draw) -> tuple[asf.AsfDataPacket, int]:
    pf = draw(PAYLOAD_PROPS)
    maxes = [0, 0xFF, 0xFFFF, 0xFFFFFFFF]
    multiple = draw(st.booleans())
    count = draw(st.integers(1, 5)) if multiple else 1
    payloads = []
    for _ in range(count):
        rep_max = min(maxes[pf & 3], 20)
        replicated = draw(st.binary(max_size=rep_max)) if rep_max else b""
        payloads.append(asf.AsfPayload(
            draw(st.integers(1, 127)), draw(st.booleans()),
            draw(st.integers(0, maxes[(pf >> 4) & 3])), draw(st.integers(0, maxes[(pf >> 2) & 3])),
            replicated, draw(st.binary(max_size=200)),
        ))
    ltf = draw(st.sampled_from([0x00, 0x02, 0x04, 0x06, 0x20, 0x40, 0x60, 0x08, 0x10]))
    packet = asf.AsfDataPacket(
        draw(U32), draw(U16), tuple(payloads), multiple_payloads=multiple,
        error_correction=draw(st.none() | st.binary(min_size=0, max_size=15)),
        sequence=draw(st.integers(0, maxes[(ltf >> 1) & 3])),
        length_type_flags=ltf, property_flags=pf,
        payload_flags=draw(st.sampled_from([0x40, 0x80, 0xC0])) if multiple else 0x80,
    )
    used = sum(len(p.data) + len(p.replicated_data) + 12 for p in payloads) + 40
    return packet, used + draw(st.integers(0, 300))


@SETTINGS
@given(data_packets())
def test_data_packet_round_trip_and_scanner_agrees(case):
    packet, size = case
    try:
        wire = asf.build_data_packet(packet, size)
    except LocalProtocolError:
        return  # e.g. a payload length that its size code cannot hold
    assert len(wire) == size
    parsed = asf.parse_data_packet(wire)
    assert parsed.payloads == packet.payloads
    assert (parsed.send_time, parsed.duration, parsed.sequence) == (
        packet.send_time, packet.duration, packet.sequence)
    assert asf.build_data_packet(parsed, size) == wire
    assert asf.packet_send_time(wire) == packet.send_time
    spans = asf.scan_payloads(wire)
    assert [s.stream & 0x7F for s in spans] == [p.stream_number for p in parsed.payloads]
    assert [bool(s.stream & 0x80) for s in spans] == [p.key_frame for p in parsed.payloads]
    keep = frozenset(p.stream_number for p in parsed.payloads[::2])
    filtered = asf.filter_streams(wire, keep, size)
    assert filtered is not None and len(filtered) == size
    assert asf.parse_data_packet(filtered).payloads == tuple(
        p for p in parsed.payloads if p.stream_number in keep)


# --- garbage -------------------------------------------------------------------------------------


def only_protocol_errors(fn, data: bytes) -> None:
    with contextlib.suppress(MmsProtocolError):
        fn(data)


GOOD_PACKET = asf.build_data_packet(asf.AsfDataPacket(1, 2, tuple(
    asf.AsfPayload(n, False, 0, 0, bytes(8), bytes(50)) for n in (1, 2))), 400)


@SETTINGS
@given(st.binary(max_size=400))
def test_garbage_into_every_asf_parser(data):
    only_protocol_errors(asf.parse_asf_header, data)
    only_protocol_errors(asf.parse_asf_header, asf.HEADER_OBJECT_GUID.bytes_le + data)
    only_protocol_errors(asf.parse_data_packet, data)
    only_protocol_errors(asf.scan_payloads, data)
    only_protocol_errors(asf.packet_send_time, data)
    only_protocol_errors(lambda d: asf.filter_streams(d, frozenset({1}), 400), data)
    only_protocol_errors(lambda d: list(asf.iter_data_packets(d, 7)), data)


@SETTINGS
@given(st.sampled_from(["header", "packet"]), st.data())
def test_asf_bit_flips_and_truncations(which, data):
    wire = synthetic_header() if which == "header" else GOOD_PACKET
    flipped = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(0, len(wire) * 8 - 1))
        flipped[bit // 8] ^= 1 << (bit % 8)
    cut = wire[: data.draw(st.integers(0, len(wire) - 1))]
    for candidate in (bytes(flipped), cut):
        if which == "header":
            only_protocol_errors(asf.parse_asf_header, candidate)
        else:
            only_protocol_errors(asf.parse_data_packet, candidate)
            only_protocol_errors(lambda d: asf.filter_streams(d, frozenset({2}), 400), candidate)
            only_protocol_errors(lambda d: asf.parse_data_packet(d, 400), candidate)
