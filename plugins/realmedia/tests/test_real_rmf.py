"""The .rm file format: golden tests against ffprobe, round trips, and hostile input."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.wire import rmf
from mediacache_realmedia.wire.rmf import (
    ContentDescription,
    DataPacket,
    FileHeader,
    FileProperties,
    IndexRecord,
    IndexTable,
    LogicalStream,
    MediaProperties,
    MultiRateHeader,
    NameValueProperty,
    RawChunk,
    RealAudioInfo,
    RealVideoInfo,
    RmFile,
    RmQuirks,
    build_logical_stream,
    build_mlti,
    build_rm,
    iter_packets,
    parse_logical_stream,
    parse_mlti,
    parse_realaudio_header,
    parse_realvideo_header,
    parse_rm,
    stream_info,
)

# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def ffprobe(path: Path, what: str, entries: str | None = None) -> list[dict]:
    """ffprobe's -show_streams / -show_packets (with MD5 data hashes) as JSON records."""
    cmd = ["ffprobe", "-v", "error", f"-show_{what}", "-show_data_hash", "md5", "-of", "json"]
    if entries:
        cmd += ["-show_entries", f"{what[:-1]}={entries}"]
    out = subprocess.run([*cmd, str(path)], check=True, capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)[what]


def data_offset(data: bytes) -> int:
    pos = 0
    while data[pos : pos + 4] != b"DATA":
        pos += struct.unpack_from(">I", data, pos + 4)[0]
    return pos


def expected_ffprobe_packet(pkt: DataPacket, offset: int, kind: str, codec: bytes) -> tuple:
    """What ffmpeg's rmdec makes of one packet of an ffmpeg-written file (see rmdec.c).

    Video: the RealVideo frame header (7 bytes, 11 for frames of 16 KiB and more) is replaced by
    a one-slice table (1 + 8 bytes). AC-3 ("dnet") is stored with its 16-bit words swapped.
    """
    if kind == "video":
        hdr = 11 if not pkt.payload[2] & 0x40 else 7
        assert pkt.payload[0] >> 6 == 2, "ffmpeg writes every frame as one 'last slice' packet"
        data = b"\x00" + struct.pack("<II", 1, 0) + pkt.payload[hdr:]
        pos = offset + 12 + hdr
    else:
        data = pkt.payload
        if codec == b"dnet":
            data = b"".join(data[i + 1 : i + 2] + data[i : i + 1] for i in range(0, len(data), 2))
        pos = offset + 12
    return len(data), pos, pkt.keyframe, hashlib.md5(data).hexdigest()


# --------------------------------------------------------------------------------------------
# golden: the files ffmpeg writes, judged by ffprobe
# --------------------------------------------------------------------------------------------

GOLDEN = {
    "rv20_ac3": {0: ("video", b"RV20"), 1: ("audio", b"dnet")},
    "rv10_ra144": {0: ("video", b"RV10"), 1: ("audio", b"lpcJ")},
}


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_streams_match_ffprobe(rm_clips: dict[str, Path], name: str) -> None:
    rm = parse_rm(rm_clips[name].read_bytes())
    probed = ffprobe(rm_clips[name], "streams")
    assert len(rm.streams) == len(probed) == 2
    for row in probed:
        index, kind, tag = row["index"], row["codec_type"], row["codec_tag_string"]
        mp = rm.stream(index)
        assert (kind, tag.encode()) == GOLDEN[name][index]
        assert mp.mime_type == f"{kind}/x-pn-real{kind}"
        info = stream_info(mp)
        if kind == "video":
            assert isinstance(info, RealVideoInfo)
            assert (info.fourcc, info.width) == (tag.encode(), row["width"])
            assert info.height == row["height"]
            assert info.fps == 15.0
        else:
            assert isinstance(info, RealAudioInfo)
            assert info.codec == tag.encode()
            assert (info.sample_rate, info.channels) == (int(row["sample_rate"]), row["channels"])
            assert info.interleaver == b"Int0"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_packets_match_ffprobe(rm_clips: dict[str, Path], name: str) -> None:
    """Same packets per stream as ffprobe: count, size, file position, key flag, MD5, pts."""
    data = rm_clips[name].read_bytes()
    rm = parse_rm(data)
    probed = ffprobe(rm_clips[name], "packets", "stream_index,pts,size,pos,flags,data_hash")
    theirs: dict[int, list[tuple]] = {0: [], 1: []}
    for p in probed:
        theirs[p["stream_index"]].append(
            (int(p["size"]), int(p["pos"]), p["flags"].startswith("K"),
             p["data_hash"].removeprefix("MD5:"), p["pts"])
        )  # fmt: skip
    ours: dict[int, list[tuple]] = {0: [], 1: []}
    offset = data_offset(data) + 18
    for pkt in rm.packets:
        kind, codec = GOLDEN[name][pkt.stream]
        expected = expected_ffprobe_packet(pkt, offset, kind, codec)
        ours[pkt.stream].append((*expected, pkt.timestamp_ms))
        offset += pkt.size
    assert {k: len(v) for k, v in ours.items()} == {k: len(v) for k, v in theirs.items()}
    assert ours == theirs
    assert len(rm.packets) == len(probed)


@pytest.mark.parametrize("name", ["rv20_ac3", "rv10_ra144", "live"])
def test_ffmpeg_files_round_trip_byte_for_byte(rm_clips: dict[str, Path], name: str) -> None:
    data = rm_clips[name].read_bytes()
    rm = parse_rm(data)
    assert build_rm(rm) == data
    assert tuple(iter_packets(data)) == rm.packets
    start = data_offset(data)
    assert tuple(iter_packets(data[start:])) == rm.packets


def test_ffmpeg_quirks_are_what_we_document(rm_clips: dict[str, Path]) -> None:
    rm = parse_rm(rm_clips["rv20_ac3"].read_bytes())
    lay = rmf._layout(rm)
    assert rm.quirks.num_headers == 6 == lay.num_headers + 1  # counts an INDX never written
    assert rm.quirks.data_size == lay.data_size + 18
    assert rm.quirks.trailer == bytes(8)
    assert (rm.quirks.prop_num_packets, rm.quirks.data_num_packets) == (None, None)
    assert rm.props.flags == 3

    live = parse_rm(rm_clips["live"].read_bytes())
    assert live.props.live and live.props.flags == 7
    assert (live.quirks.data_size, live.quirks.data_num_packets) == (18, 0)
    assert live.quirks.prop_num_packets == 0
    assert live.packets and all(mp.duration_ms == 3_600_000 for mp in live.streams)

    ra144 = parse_rm(rm_clips["rv10_ra144"].read_bytes())
    audio = [p for p in ra144.packets if p.stream == 1]
    assert {p.timestamp_ms for p in audio} == {0}  # ffmpeg: frame_size 0 -> no audio clock
    assert ra144.stream(1).duration_ms == 0


def test_consistent_rebuild_is_read_by_ffmpeg(rm_clips: dict[str, Path], tmp_path: Path) -> None:
    """Dropping the quirks, adding CONT strings, an INDX per stream and a logical-fileinfo MDPR
    gives a file ffprobe reads with the same packets, the title and the fileinfo property."""
    src = rm_clips["rv20_ac3"]
    rm = parse_rm(src.read_bytes())
    fileinfo = LogicalStream(properties=(NameValueProperty("Rating", 2, b"Everyone\x00"),))
    plain = dataclasses.replace(
        rm,
        quirks=RmQuirks(),
        content=ContentDescription("A title", "An author", "(c) nobody", "a comment"),
        streams=(
            *rm.streams,
            MediaProperties(2, 0, 0, 0, 0, 0, 0, 0, "", "logical-fileinfo",
                            build_logical_stream(fileinfo)),
        ),
    )  # fmt: skip
    # Index every keyframe: offsets need the final layout, which the INDX chunks do not move.
    start = rmf._layout(plain).data_offset + 18
    offsets, pos = [], start
    for n, pkt in enumerate(plain.packets):
        offsets.append((pkt, pos, n))
        pos += pkt.size
    indexes = tuple(
        IndexTable(s, tuple(IndexRecord(p.timestamp_ms, o, n) for p, o, n in offsets
                            if p.stream == s and p.keyframe))
        for s in (0, 1)
    )  # fmt: skip
    plain = dataclasses.replace(plain, indexes=indexes)
    built = build_rm(plain)
    assert parse_rm(built) == plain  # no quirks left: everything declared is consistent
    out = tmp_path / "rebuilt.rm"
    out.write_bytes(built)

    fields = "stream_index,size,flags,data_hash"
    before = ffprobe(src, "packets", fields)
    after = ffprobe(out, "packets", fields)
    assert before == after
    tags = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format_tags", "-of", "default=nw=1", str(out)],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    assert "TAG:title=A title" in tags
    assert "TAG:author=An author" in tags
    assert "TAG:Rating=Everyone" in tags


# --------------------------------------------------------------------------------------------
# hand-made structures
# --------------------------------------------------------------------------------------------


def small_file(**changes) -> RmFile:
    rm = RmFile(
        header=FileHeader(),
        props=FileProperties(1000, 900, 100, 50, 2000, 0, 3),
        streams=(MediaProperties(0, 1000, 900, 100, 50, 0, 0, 2000, "s", "audio/x-pn-realaudio",
                                 b".ra\xfd\x00\x03"),),
        content=None,
        packets=(DataPacket(0, 0, 2, None, b"abc"), DataPacket(0, 40, 0, None, b"de")),
    )  # fmt: skip
    return dataclasses.replace(rm, **changes)


def test_index_size_quirk_round_trips() -> None:
    table = IndexTable(0, (IndexRecord(0, 400, 0), IndexRecord(40, 415, 1)))
    quirks = RmQuirks(index_sizes_exclude_records=True)
    rm = small_file(indexes=(table, IndexTable(1)), quirks=quirks)
    data = build_rm(rm)
    assert data.count(b"INDX\x00\x00\x00\x14") == 2
    back = parse_rm(data)
    assert back.indexes == rm.indexes and back.quirks.index_sizes_exclude_records
    assert build_rm(back) == data


def test_version1_packets_and_keyframes() -> None:
    rm = small_file(packets=(DataPacket(0, 5, 1, 7, b"x"), DataPacket(0, 6, 2, 8, b"yz")))
    back = parse_rm(build_rm(rm))
    assert back == rm
    shape = [(p.version, p.keyframe, p.size) for p in back.packets]
    assert shape == [(1, True, 14), (1, False, 15)]
    assert [p.keyframe for p in small_file().packets] == [True, False]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.replace(b"PROP", b"PROQ"), "no PROP"),
        (lambda d: d[:-1], "packet"),
        (lambda d: d + b"\x01", "after the last chunk"),
        (lambda d: d + d[data_offset(d) :], "more than one DATA"),
        (lambda d: b"RMF." + d[4:], "not a RealMedia"),
        (lambda d: d[: data_offset(d)], "no DATA"),
        (lambda d: d + b"\x01\x02\x03\x04\x00\x00\x00\x10" + bytes(8), "no chunk id"),
        (lambda d: d + b"RMMD\x00\x00\x00\x04", "bad size"),
    ],
)
def test_broken_files_are_refused(mutate, message: str) -> None:
    data = build_rm(small_file())
    with pytest.raises(RealProtocolError, match=message):
        parse_rm(mutate(data))


def test_unknown_chunks_are_kept_in_place() -> None:
    rm = small_file(
        extra_headers=(RawChunk(b"ABCD", b"\x00\x00head"),),
        extra_chunks=(RawChunk(b"RMMD", b"\x00\x00meta"),),
        quirks=RmQuirks(trailer=bytes(3)),
    )
    assert parse_rm(build_rm(rm)) == rm


def test_build_refuses_values_that_do_not_fit() -> None:
    with pytest.raises(LocalProtocolError):
        build_rm(small_file(props=FileProperties(flags=1 << 16)))
    with pytest.raises(LocalProtocolError):
        build_rm(small_file(content=ContentDescription(title="\u20ac")))
    with pytest.raises(LocalProtocolError):
        build_rm(small_file(packets=(DataPacket(0, 0, 0, None, bytes(70000)),)))


def test_type_specific_parsers() -> None:
    video = struct.pack(">I4s4sHHHII", 34, b"VIDO", b"RV40", 320, 240, 12, 0, 25 << 16) + bytes(8)
    assert parse_realvideo_header(video) == RealVideoInfo(b"RV40", 320, 240, 12, 25.0, bytes(8))
    v5 = (b".ra\xfd" + struct.pack(">HH4sIHIHIIIIHHHH", 5, 0, b".ra5", 0, 5, 70, 1, 600, 0, 0, 0,
          16, 600, 300, 0) + bytes(6) + struct.pack(">HHHH", 44100, 0, 16, 2) + b"genrcook"
          + bytes(12))  # fmt: skip
    info = parse_realaudio_header(v5)
    assert (info.version, info.codec, info.interleaver) == (5, b"cook", b"genr")
    assert (info.sample_rate, info.channels) == (44100, 2)
    assert (info.frame_size, info.sub_packet_h) == (600, 16)
    # v3: header size 20 = 8 unknown, bytes/minute, 4 unknown, four empty strings, 2 more
    v3 = b".ra\xfd" + struct.pack(">HH", 3, 20) + bytes(8) + b"\x04\xb0" + bytes(4 + 4 + 2)
    expected = RealAudioInfo(3, b"lpcJ", b"Int0", 8000, 1, bytes_per_minute=1200)
    assert parse_realaudio_header(v3) == expected
    mp = small_file().streams[0]
    as_video = dataclasses.replace(mp, type_specific_data=video)
    assert stream_info(as_video) == parse_realvideo_header(video)
    assert stream_info(dataclasses.replace(mp, type_specific_data=b"none")) is None


def test_logical_stream_and_mlti() -> None:
    ls = LogicalStream(
        physical_streams=((1, 1000), (2, 2000)),
        rule_to_physical_stream=(0, 0, 1, 1),
        properties=(NameValueProperty("Rating", 0, b"\x00\x00\x00\x05"),
                    NameValueProperty("Title", 2, b"hi\x00")),
    )  # fmt: skip
    data = build_logical_stream(ls)
    assert parse_logical_stream(data) == ls
    assert ls.get("rating").as_int() == 5 and ls.get("TITLE").as_str() == "hi"
    assert ls.get("nothing") is None
    with pytest.raises(RealProtocolError):
        ls.get("Title").as_int()
    mlti = MultiRateHeader((0, 0, 1, 1), (b"first", b"second"))
    assert parse_mlti(build_mlti(mlti)) == mlti
    with pytest.raises(RealProtocolError):
        parse_mlti(build_mlti(mlti) + b"x")


# --------------------------------------------------------------------------------------------
# hypothesis: round trips through every declaration
# --------------------------------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
latin1 = st.text(st.characters(max_codepoint=255), max_size=20)
blob = st.binary(max_size=40)

packets = st.one_of(
    st.builds(DataPacket, u16, u32, u8, st.none(), blob, u8),
    st.builds(DataPacket, u16, u32, u8, u16, blob, st.just(0)),
)
media = st.builds(MediaProperties, u16, u32, u32, u32, u32, u32, u32, u32, latin1, latin1, blob)
known = {b".RMF", b"PROP", b"CONT", b"MDPR", b"DATA", b"INDX"}
raw_chunks = st.builds(
    RawChunk,
    st.binary(min_size=4, max_size=4).filter(
        lambda b: all(0x20 <= c < 0x7F for c in b) and b not in known
    ),
    st.binary(min_size=2, max_size=20),
)
index_tables = st.builds(
    IndexTable, u16, st.lists(st.builds(IndexRecord, u32, u32, u32), max_size=4).map(tuple)
)
rm_files = st.builds(
    RmFile,
    header=st.builds(FileHeader, st.sampled_from([0, 1]), u32),
    props=st.builds(FileProperties, u32, u32, u32, u32, u32, u32, u16),
    streams=st.lists(media, max_size=3).map(tuple),
    content=st.none() | st.builds(ContentDescription, latin1, latin1, latin1, latin1),
    packets=st.lists(packets, max_size=6).map(tuple),
    indexes=st.lists(index_tables, max_size=2).map(tuple),
    next_data_header=u32,
    extra_headers=st.lists(raw_chunks, max_size=2).map(tuple),
    extra_chunks=st.lists(raw_chunks, max_size=2).map(tuple),
)
quirks = st.builds(
    RmQuirks,
    num_headers=st.none() | u32,
    prop_num_packets=st.none() | u32,
    prop_num_streams=st.none() | u16,
    prop_index_offset=st.none() | u32,
    prop_data_offset=st.none() | u32,
    data_size=st.none() | u32,
    data_num_packets=st.none() | st.just(0),
    index_sizes_exclude_records=st.booleans(),
    trailer=st.integers(0, 12).map(bytes),
)


@given(rm_files)
def test_rm_file_round_trip(rm: RmFile) -> None:
    data = build_rm(rm)
    assert parse_rm(data) == rm
    assert tuple(iter_packets(data)) == rm.packets
    assert rmf._layout(rm).data_offset == data_offset(data)


@given(rm_files, quirks)
def test_quirks_survive_a_round_trip(rm: RmFile, q: RmQuirks) -> None:
    data = build_rm(dataclasses.replace(rm, quirks=q))
    back = parse_rm(data)
    assert build_rm(back) == data
    assert back.packets == rm.packets and back.streams == rm.streams


@given(st.sampled_from([0, 1]), u16, u32, u8, u16, u8, blob)
def test_packet_struct_fast_path_agrees_with_declaration(ver, stream, ts, a, b, c, payload) -> None:
    hdr = {"packet_group": a, "flags": c} if ver == 0 else {"asm_rule": b, "asm_flags": c}
    obj = {"object_version": ver, "stream_number": stream, "timestamp": ts, "header": hdr,
           "payload": payload}  # fmt: skip
    data = rmf._PACKET.build(obj)
    parsed = rmf._PACKET.parse(data)
    pkt, end = rmf._packet_at(data, 0)
    assert end == len(data) == parsed.length
    assert (pkt.stream, pkt.timestamp_ms, pkt.payload) == (stream, ts, payload)
    assert (pkt.flags, pkt.asm_rule) == ((c, None) if ver == 0 else (c, b))


@given(st.binary(min_size=4, max_size=4), u16, u16, u16, u16, u32, blob)
def test_realvideo_declaration_round_trip(fourcc, w, h, bpp, unknown, fps, extra) -> None:
    obj = {"fourcc": fourcc, "width": w, "height": h, "bits_per_pixel": bpp, "unknown": unknown,
           "fps": fps, "extradata": extra}  # fmt: skip
    data = rmf._REALVIDEO.build(obj)
    assert struct.unpack_from(">I", data)[0] == len(data)
    info = parse_realvideo_header(data)
    assert (info.fourcc, info.width, info.height, info.extradata) == (fourcc, w, h, extra)
    assert info.fps == fps / 65536


fourcc = st.binary(min_size=4, max_size=4)


@given(st.sampled_from([4, 5]), st.lists(u16, min_size=9, max_size=9),
       st.lists(u32, min_size=6, max_size=6), fourcc, fourcc, blob)  # fmt: skip
def test_realaudio_declaration_round_trip(version, s16, s32, inter, codec, rest) -> None:
    body = {
        "unused": s16[0], "ra_tag": b".ra%d" % version, "data_size": s32[0], "version2": s16[1],
        "header_size": s32[1], "flavor": s16[2], "coded_frame_size": s32[2], "unknown1": s32[3],
        "bytes_per_minute": s32[4], "bytes_per_minute2": s32[5], "sub_packet_h": s16[3],
        "frame_size": s16[4], "sub_packet_size": s16[5], "unknown2": s16[6],
        "v5_extra": bytes(6) if version == 5 else None, "sample_rate": s16[7], "unknown3": 0,
        "sample_size": 16, "channels": s16[8], "interleaver": inter, "codec": codec, "rest": rest,
    }  # fmt: skip
    data = rmf._REALAUDIO.build({"version": version, "body": body})
    assert rmf._REALAUDIO.build(rmf._REALAUDIO.parse(data)) == data
    info = parse_realaudio_header(data)
    assert (info.version, info.codec, info.interleaver) == (version, codec, inter)
    assert (info.sample_rate, info.channels, info.flavor) == (s16[7], s16[8], s16[2])


name_values = st.builds(NameValueProperty, latin1, u32, blob)


@given(st.builds(
    LogicalStream,
    st.lists(st.tuples(u16, u32), max_size=4).map(tuple),
    st.lists(u16, max_size=6).map(tuple),
    st.lists(name_values, max_size=4).map(tuple),
))  # fmt: skip
def test_logical_stream_round_trip(ls: LogicalStream) -> None:
    assert parse_logical_stream(build_logical_stream(ls)) == ls


@given(st.builds(MultiRateHeader, st.lists(u16, max_size=6).map(tuple),
                 st.lists(blob, max_size=4).map(tuple)))  # fmt: skip
def test_mlti_round_trip(mlti: MultiRateHeader) -> None:
    assert parse_mlti(build_mlti(mlti)) == mlti


# --------------------------------------------------------------------------------------------
# hostile input: RealProtocolError and nothing else
# --------------------------------------------------------------------------------------------


def only_our_error(fn, data: bytes) -> None:
    try:
        result = fn(data)
        if hasattr(result, "__next__"):
            list(result)
    except RealProtocolError:
        pass


PARSERS = [parse_rm, iter_packets, parse_realvideo_header, parse_realaudio_header,
           parse_logical_stream, parse_mlti]  # fmt: skip


@given(st.sampled_from(PARSERS), st.binary(max_size=300))
@example(parse_rm, b".RMF")
@example(iter_packets, b"DATA" + bytes(14) + b"\x00\x00\xff\xff")
def test_random_bytes(fn, data: bytes) -> None:
    only_our_error(fn, data)


@given(st.sampled_from(PARSERS), st.sampled_from([b".RMF", b"DATA", b".ra\xfd", b"MLTI"]),
       st.binary(max_size=300))  # fmt: skip
def test_random_bytes_behind_a_magic(fn, magic: bytes, data: bytes) -> None:
    only_our_error(fn, magic + data)


@pytest.fixture(scope="module")
def clip_bytes(rm_clips: dict[str, Path]) -> dict[str, bytes]:
    return {name: path.read_bytes() for name, path in rm_clips.items()}


def test_every_truncation_of_the_header_section(clip_bytes: dict[str, bytes]) -> None:
    data = clip_bytes["rv20_ac3"]
    for end in range(data_offset(data) + 64):
        with pytest.raises(RealProtocolError):
            parse_rm(data[:end])
    for end in range(0, len(data), 97):
        only_our_error(parse_rm, data[:end])
        only_our_error(iter_packets, data[:end])


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_flipped_bytes(clip_bytes: dict[str, bytes], data: st.DataObject) -> None:
    original = clip_bytes[data.draw(st.sampled_from(sorted(clip_bytes)))]
    # Mostly the header section and the first packets, where the structure is.
    limit = data.draw(st.sampled_from([600, len(original)]))
    buf = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, min(limit, len(buf)) - 1))
        buf[at] ^= data.draw(st.integers(1, 255))
    only_our_error(parse_rm, bytes(buf))
    only_our_error(iter_packets, bytes(buf))
    try:
        rm = parse_rm(bytes(buf))
    except RealProtocolError:
        return
    for mp in rm.streams:
        with contextlib.suppress(RealProtocolError):
            stream_info(mp)
