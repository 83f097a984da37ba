"""MMS command and data packets: golden bytes from ffmpeg's and VLC's requests, the offsets
VLC reads, round trips, the TCP framer, and garbage."""

from __future__ import annotations

import contextlib
import dataclasses
import struct
import typing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError
from mediacache_wmt import MmsProtocolError
from mediacache_wmt.wire import mms

SETTINGS = settings(
    deadline=None, max_examples=60, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def ffmpeg_command(mid: int, prefix1: int, prefix2: int, payload: bytes, seq: int) -> bytes:
    """A command exactly as libavformat's mmst.c send_command_packet() lays it out."""
    body = struct.pack("<II", prefix1, prefix2) + payload
    exact = (40 + len(body) + 7) & ~7
    first = exact - 16
    head = struct.pack("<IIIIII", 1, 0xB00BFACE, first, 0x20534D4D, first // 8, seq)
    head += struct.pack("<QIHH", 0, first // 8 - 2, mid, 3)
    return (head + body).ljust(exact, b"\0")


def utf16z(text: str) -> bytes:
    return text.encode("utf-16-le") + b"\0\0"


FFMPEG_REQUESTS = [
    # (bytes as ffmpeg sends them, what they mean)
    (
        ffmpeg_command(0x01, 0, 0x0004000B, struct.pack("<I", 0x0003001C) + utf16z(
            "NSPlayer/7.0.0.1956; {7E667F5D-A661-495E-A512-F55686DDA178}; Host: origin"), 0),
        mms.Connect("NSPlayer/7.0.0.1956; {7E667F5D-A661-495E-A512-F55686DDA178}; Host: origin",
                    play_incarnation=0),
    ),
    (ffmpeg_command(0x18, 0x00F0F0F0, 0x0004000B, b"", 1),
     mms.FunnelInfo(play_incarnation=0x00F0F0F0, spare=0x0004000B)),
    (
        ffmpeg_command(0x02, 0, 0xFFFFFFFF, struct.pack("<III", 0, 0x00989680, 2)
                       + utf16z("\\\\192.168.0.129\\TCP\\1037"), 2),
        mms.ConnectFunnel("\\\\192.168.0.129\\TCP\\1037"),
    ),
    (ffmpeg_command(0x05, 1, 0xFFFFFFFF, struct.pack("<II", 0, 0) + utf16z("clip.wmv"), 3),
     mms.OpenFile("clip.wmv", spare=0xFFFFFFFF)),
    (
        ffmpeg_command(0x15, 1, 0, struct.pack("<IIIIIIIIII", 0, 0x00800000, 0xFFFFFFFF, 0, 0,
                                               0, 0, 0x40AC2000, 2, 0), 4),
        mms.ReadBlock(length=0x00800000),
    ),
    (
        ffmpeg_command(0x33, 2, 0x0001FFFF, struct.pack("<HHHH", 0, 0xFFFF, 2, 0), 5),
        mms.StreamSwitch.select([1, 2]),
    ),
    (
        ffmpeg_command(0x07, 1, 0x0001FFFF, struct.pack("<QIIBBBBI", 0, 0xFFFFFFFF, 0xFFFFFFFF,
                                                        0xFF, 0xFF, 0xFF, 0, 4), 6),
        mms.StartPlaying(play_incarnation=4, padding=0x0001FFFF),
    ),
    (ffmpeg_command(0x1B, 1, 0x0100FFFF, b"", 7), mms.Pong(1, 0x0100FFFF)),
    (ffmpeg_command(0x0D, 1, 1, b"", 8), mms.CloseFile(play_incarnation=1)),
]


@pytest.mark.parametrize(("wire", "command"), FFMPEG_REQUESTS,
                         ids=[type(c).__name__ for _, c in FFMPEG_REQUESTS])
def test_ffmpeg_requests_parse_and_rebuild_byte_exact(wire: bytes, command: mms.MmsCommand):
    assert mms.parse_command(wire) == command
    sequence = struct.unpack_from("<I", wire, 20)[0]
    assert mms.build_command(command, sequence=sequence) == wire


def test_start_playing_packet_id_is_byte_68_of_the_command():
    wire = mms.build_command(mms.StartPlaying(play_incarnation=0x2A), sequence=0)
    assert wire[68] == 0x2A
    assert mms.parse_command(wire).packet_id == 0x2A


def test_vlc_stream_selection_layout():
    # VLC: prefix1 = count, prefix2 = 0xFFFF | first id << 16, then action, then (0xFFFF, id,
    # action) for the others
    payload = struct.pack("<H", 0) + struct.pack("<HHH", 0xFFFF, 3, 2)
    wire = ffmpeg_command(0x33, 2, 0xFFFF | 1 << 16, payload, 9)
    cmd = mms.parse_command(wire)
    assert cmd == mms.StreamSwitch.select({1: mms.Thinning.ALL, 3: mms.Thinning.OFF})
    assert cmd.selected == frozenset({1})


def test_report_open_file_fields_where_vlc_reads_them():
    reply = mms.ReportOpenFile(
        file_attributes=mms.FileAttributes.BROADCAST, file_duration=3.046,
        file_blocks=mms.file_blocks_for(3.046), file_packet_size=3200, file_packet_count=54,
        file_bit_rate=364000, file_header_size=809,
    )
    wire = mms.build_command(reply, sequence=0)
    at = lambda off: struct.unpack_from("<I", wire, 48 + off)[0]  # noqa: E731 - VLC's GetDWLE
    assert at(0) == 1  # open file id: "media file name/path accepted"
    assert at(12) >> 24 == 0x02  # live broadcast
    assert at(24) == 4  # the media length in seconds VLC logs
    assert struct.unpack_from("<d", wire, 48 + 16)[0] == 3.046
    assert (at(44), at(48), at(56), at(60)) == (3200, 54, 364000, 809)
    assert mms.parse_command(wire).is_broadcast


def test_report_connected_ex_string_lengths_where_vlc_reads_them():
    reply = mms.ReportConnectedEx(server_version_info="9.1", authen_package="NTLM")
    wire = mms.build_command(reply, sequence=0)
    assert struct.unpack_from("<4I", wire, 48 + 32) == (4, 0, 0, 5)  # WCHARs with the NUL
    assert wire[96:104] == utf16z("9.1")
    assert wire[104:114] == utf16z("NTLM")
    assert len(wire) >= 48 + 48


def test_command_header_fields():
    wire = mms.build_command(mms.Ping(), sequence=0x1234, timestamp=2.5)
    assert len(wire) == 48
    assert struct.unpack_from("<IIIIII", wire) == (1, 0xB00BFACE, 32, 0x20534D4D, 4, 0x1234)
    assert struct.unpack_from("<dIHH", wire, 24) == (2.5, 2, 0x1B, 4)
    assert mms.parse_command(wire).direction is mms.Direction.TO_CLIENT


def test_error_reply_carries_hresult_as_prefix1():
    wire = mms.build_command(mms.ReportOpenFile(hr=mms.HResult.FILE_NOT_FOUND), sequence=3)
    assert struct.unpack_from("<I", wire, 40)[0] == 0xC00D001A


def test_open_file_with_token_data():
    cmd = mms.OpenFile("abc.asf", token_data=b"user:pass\0")
    wire = mms.build_command(cmd, sequence=0)
    token, cbtoken = struct.unpack_from("<II", wire, 48)
    assert (token, cbtoken) == (16, 10)  # the spec's example: "abc.asf" -> 0x10
    assert mms.parse_command(wire) == cmd


def test_connect_funnel_transport():
    assert mms.ConnectFunnel.for_transport("10.0.0.1", "udp", 7000).transport == (
        "10.0.0.1", "UDP", 7000)
    assert mms.ConnectFunnel("nonsense").transport is None
    assert mms.ConnectFunnel("\\\\a\\TCP\\70000").transport is None


def test_unknown_message_id_is_kept():
    wire = ffmpeg_command(0x99, 1, 2, b"xyzw", 0)
    cmd = mms.parse_command(wire)
    assert cmd == mms.UnknownCommand(mid=0x00030099, body=struct.pack("<II", 1, 2) + b"xyzw"
                                     + bytes(4))
    assert mms.build_command(cmd, sequence=0) == wire


def test_bad_direction_is_refused():
    wire = bytearray(ffmpeg_command(0x01, 0, 0, b"", 0))
    wire[38] = 7
    with pytest.raises(MmsProtocolError):
        mms.parse_command(bytes(wire))


def test_build_out_of_range_is_a_local_error():
    with pytest.raises(LocalProtocolError):
        mms.build_command(mms.Ping(param1=1 << 32), sequence=0)
    with pytest.raises(LocalProtocolError):
        mms.build_data_packet(0, 2, 0, bytes(70000))


# --- data packets -------------------------------------------------------------------------------


def test_data_packet_layout_and_restamp():
    packet = mms.build_data_packet(7, 5, 0x0C, b"payload")
    assert packet == struct.pack("<IBBH", 7, 5, 0x0C, 15) + b"payload"
    assert mms.parse_data_packet(packet) == mms.MmsDataPacket(7, 5, 0x0C, b"payload")
    restamped = mms.restamp_data_packet(packet, sequence=9, packet_id=6)
    assert mms.parse_data_packet(restamped) == mms.MmsDataPacket(9, 6, 0x0C, b"payload")
    assert mms.DATA_PACKET.parse(packet).payload == b"payload"


def test_header_packets_flags_follow_ffmpeg():
    header = bytes(range(256)) * 10
    parts = [mms.parse_data_packet(p) for p in mms.header_packets(header, max_payload=1000)]
    assert [p.flags for p in parts] == [0x04, 0x04, 0x08]
    assert [p.sequence for p in parts] == [0, 1, 2]
    assert {p.packet_id for p in parts} == {2}
    assert b"".join(p.payload for p in parts) == header
    assert parts[-1].header_ends and not parts[0].header_ends
    (only,) = mms.header_packets(b"x" * 10, packet_id=9)
    assert mms.parse_data_packet(only) == mms.MmsDataPacket(0, 9, 0x0C, b"x" * 10)


@SETTINGS
@given(st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(0, 255),
       st.binary(max_size=2000))
def test_data_packet_hot_path_agrees_with_declaration(seq, pid, flags, payload):
    packet = mms.build_data_packet(seq, pid, flags, payload)
    assert packet == mms.DATA_PACKET.build(
        {"sequence": seq, "packet_id": pid, "flags": flags, "payload": payload})
    c = mms.DATA_PACKET.parse(packet)
    assert mms.data_packet_header(packet) == (c.sequence, c.packet_id, c.flags, c.length)
    assert mms.parse_data_packet(packet) == mms.MmsDataPacket(seq, pid, flags, payload)


# --- hypothesis: every declaration round-trips ------------------------------------------------

U32 = st.integers(0, 2**32 - 1)
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40)
F64 = st.floats(allow_nan=False, width=64)
PADDED = st.binary(max_size=64).map(lambda b: b + bytes(-len(b) % 8))
OVERRIDES: dict[tuple[type, str], st.SearchStrategy[typing.Any]] = {
    (mms.ReportRedirect, "redirect_type"): st.integers(0, 0xFFFF),
    (mms.ReportOpenFile, "file_packet_count"): st.integers(0, 2**64 - 1),
    (mms.Logging, "log"): PADDED,
    (mms.ReportFunnelInfo, "packet_pair"): PADDED,
    (mms.StreamSwitch, "entries"): st.lists(st.builds(
        mms.StreamSwitchEntry, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFF)), max_size=8).map(tuple),
    (mms.StartPlaying, "acceleration"): st.none() | st.builds(mms.Acceleration, U32, U32, U32),
}
BY_TYPE = {"int": U32, "float": F64, "str": TEXT, "bytes": st.binary(max_size=64)}


def command_strategy(cls: type[mms.MmsCommand]) -> st.SearchStrategy[mms.MmsCommand]:
    kwargs = {
        f.name: OVERRIDES[cls, f.name] if (cls, f.name) in OVERRIDES else BY_TYPE[str(f.type)]
        for f in dataclasses.fields(cls)
    }
    return st.builds(cls, **kwargs)


ALL_COMMANDS = [c for c in mms._BODIES] + [mms.UnknownCommand]
OVERRIDES[(mms.UnknownCommand, "mid")] = st.sampled_from([0x00030099, 0x00040077])
OVERRIDES[(mms.UnknownCommand, "body")] = PADDED


def test_every_message_id_has_a_class():
    assert {c.MID for c in mms._BODIES} == set(mms.MessageId)


@pytest.mark.parametrize("cls", ALL_COMMANDS, ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data(), sequence=U32, timestamp=F64)
def test_round_trip_every_command(cls, data, sequence, timestamp):
    cmd = data.draw(command_strategy(cls))
    wire = mms.build_command(cmd, sequence=sequence, timestamp=timestamp)
    assert len(wire) % 8 == 0
    assert mms.parse_command(wire) == cmd
    frame = mms.COMMAND_PACKET.parse(wire)
    assert (frame.sequence, frame.message_length, frame.chunk_count, frame.chunk_len) == (
        sequence, len(wire) - 16, (len(wire) - 16) // 8, (len(wire) - 32) // 8)
    assert mms.build_command(mms.parse_command(wire), sequence=sequence,
                             timestamp=timestamp) == wire


# --- the framer ----------------------------------------------------------------------------------


def sample_stream() -> tuple[bytes, list[object]]:
    events: list[object] = [
        mms.ReportConnectedEx(), mms.ReportReadBlock(),
        mms.MmsDataPacket(0, 2, 0x04, b"h" * 100), mms.MmsDataPacket(1, 2, 0x08, b"H" * 50),
        mms.ReportStartedPlaying(), mms.MmsDataPacket(0, 4, 0, bytes(3200)),
        mms.Ping(), mms.MmsDataPacket(1, 4, 1, b"\xce\xfa\x0b\xb0" * 10), mms.ReportEndOfStream(),
    ]
    wire = b""
    for n, e in enumerate(events):
        if isinstance(e, mms.MmsDataPacket):
            wire += mms.build_data_packet(e.sequence, e.packet_id, e.flags, e.payload)
        else:
            wire += mms.build_command(e, sequence=n)
    return wire, events


def drain(reader: mms.MmsStreamReader) -> list[object]:
    out = []
    while (event := reader.next_event()) is not None:
        out.append(event)
    return out


@SETTINGS
@given(st.lists(st.integers(1, 400), max_size=40))
def test_reader_reassembles_any_split(cuts):
    wire, events = sample_stream()
    reader = mms.MmsStreamReader()
    got, pos = [], 0
    for cut in cuts:
        reader.receive_data(wire[pos : pos + cut])
        pos += cut
        got += drain(reader)
    reader.receive_data(wire[pos:])
    got += drain(reader)
    reader.receive_data(b"")
    assert reader.next_event() is None and reader.at_eof
    assert got == events


def test_reader_next_frame_returns_raw_bytes():
    wire, _ = sample_stream()
    reader = mms.MmsStreamReader()
    reader.receive_data(wire)
    frames = []
    while (frame := reader.next_frame()) is not None:
        frames.append(frame)
    assert b"".join(frames) == wire
    assert [mms.is_command(f) for f in frames[:3]] == [True, True, False]


def test_reader_refuses_absurd_command_length_at_once():
    reader = mms.MmsStreamReader()
    reader.receive_data(struct.pack("<III", 1, 0xB00BFACE, 0x7FFFFFF0))
    with pytest.raises(MmsProtocolError) as info:
        reader.next_event()
    assert info.value.status_hint == 413
    with pytest.raises(MmsProtocolError):  # stays failed
        reader.next_event()


@pytest.mark.parametrize("head", [
    struct.pack("<III", 1, 0xB00BFACE, 8),  # shorter than a command header
    struct.pack("<IBBH", 0, 4, 0, 5),  # data packet length below 8
])
def test_reader_refuses_impossible_lengths(head):
    reader = mms.MmsStreamReader()
    reader.receive_data(head)
    with pytest.raises(MmsProtocolError):
        reader.next_event()


def test_reader_end_inside_a_packet():
    reader = mms.MmsStreamReader()
    reader.receive_data(mms.build_command(mms.Ping(), sequence=0)[:30])
    assert reader.next_event() is None
    reader.receive_data(b"")
    with pytest.raises(MmsProtocolError):
        reader.next_event()


def test_reader_cap_is_configurable():
    reader = mms.MmsStreamReader(max_command_size=64)
    reader.receive_data(mms.build_command(mms.ReportOpenFile(), sequence=0))
    with pytest.raises(MmsProtocolError):
        reader.next_event()


# --- garbage -------------------------------------------------------------------------------------

VALID = [w for w, _ in FFMPEG_REQUESTS] + [
    mms.build_command(c, sequence=1) for c in (
        mms.ReportConnectedEx(authen_package="BASIC"), mms.ReportOpenFile(),
        mms.ReportRedirect("mms://x/"), mms.SecurityChallenge(b"realm"),
        mms.StartPlaying(acceleration=mms.Acceleration(1, 2, 3)),
    )
]


def only_protocol_errors(parse: typing.Callable[[bytes], object], data: bytes) -> None:
    with contextlib.suppress(MmsProtocolError):
        parse(data)


@SETTINGS
@given(st.binary(max_size=300))
def test_garbage_into_every_parser(data):
    only_protocol_errors(mms.parse_command, data)
    only_protocol_errors(mms.parse_data_packet, data)
    only_protocol_errors(lambda d: mms.parse_command(d[:4] + b"\xce\xfa\x0b\xb0" + d[8:]), data)
    reader = mms.MmsStreamReader()
    reader.receive_data(data)
    only_protocol_errors(lambda _: drain(reader), data)


@SETTINGS
@given(st.sampled_from(VALID), st.data())
def test_bit_flips_and_truncations(wire, data):
    flipped = bytearray(wire)
    for _ in range(data.draw(st.integers(1, 4))):
        bit = data.draw(st.integers(0, len(wire) * 8 - 1))
        flipped[bit // 8] ^= 1 << (bit % 8)
    only_protocol_errors(mms.parse_command, bytes(flipped))
    cut = data.draw(st.integers(0, len(wire) - 1))
    with pytest.raises(MmsProtocolError):
        mms.parse_command(wire[:cut])
    with pytest.raises(MmsProtocolError):
        mms.parse_command(wire + b"\0" * data.draw(st.integers(1, 16)))
