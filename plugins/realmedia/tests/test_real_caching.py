"""RDT recording and replay, sans-I/O: what a MISS stores and what each HIT viewer gets."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mediacache.cache.objects import CacheKey, TrackMeta
from mediacache.cache.store import CacheStore, Fill
from mediacache.testing.playbook import RecordingSink
from mediacache_realmedia.caching import (
    RdtReplay,
    RdtReplayTrack,
    SetIdSink,
    ends_stream,
    make_recorder,
)
from mediacache_realmedia.origin import rdt_data_packet
from mediacache_realmedia.wire.rdt import RdtData, RdtStreamEnd, build_stream_end, parse_rdt

KEY = CacheKey.make("realmedia", "rtsp://o/clip.rm", "streamid=0,streamid=1|stream=0;rule=0")


def new_fill() -> tuple[CacheStore, Fill]:
    store = CacheStore(None, memory_limit=1 << 24, disk_limit=0)
    tracks = [
        TrackMeta(track_id=0, control="streamid=0", clock_rate=1000, codec="x-pn-realvideo"),
        TrackMeta(track_id=1, control="streamid=1", clock_rate=1000, codec="x-pn-realaudio"),
    ]
    return store, store.begin_fill(KEY, tracks=tracks)


def clip() -> list[tuple[int, bytes]]:
    """(origin channel, packet): video on channel 4 (a key frame every 5th), audio on 6."""
    out = []
    for i in range(20):
        out.append((4, rdt_data_packet(4, i, 0 if i % 5 == 0 else 1, i * 100, b"v%d" % i)))
        out.append((6, rdt_data_packet(6, i, 0, i * 100, b"a%d" % i)))
    return out


def record_clip() -> tuple[CacheStore, Fill]:
    store, fill = new_fill()
    recorder = make_recorder(fill, [4, 6], 0.0)
    for n, (channel, packet) in enumerate(clip()):
        assert not recorder.on_frame(channel, packet, n * 0.05)
    assert not recorder.on_frame(4, build_stream_end(4, 20, 1900), 2.0)
    assert recorder.on_frame(6, build_stream_end(6, 20, 1900), 2.0)  # every stream ended
    assert recorder.failed is None
    return store, fill


def play(source: object, npt: float | None = 0.0) -> tuple[RdtReplay, RecordingSink, RecordingSink]:
    video, audio = RecordingSink("tcp", 0), RecordingSink("udp", 1)
    replay = RdtReplay(
        source,  # type: ignore[arg-type]
        [RdtReplayTrack(video, set_id=0, video=True), RdtReplayTrack(audio, set_id=1, video=False)],
    )
    replay.play(100.0, npt)
    for step in range(200):  # bounded: the clip lasts 2 s of stored time
        if replay.pump(100.0 + step * 0.05) is None and replay.end_sent:
            break
    return replay, video, audio


def test_the_recorder_stores_data_packets_and_the_replay_readdresses_them() -> None:
    store, fill = record_clip()
    obj = fill.commit()
    assert len(obj) == 40  # stream-end packets are not stored
    _, video, audio = play(obj)
    got = [parse_rdt(p)[0] for p in video.payloads]
    data = [p for p in got if isinstance(p, RdtData)]
    assert [p.payload for p in data] == [b"v%d" % i for i in range(20)]
    assert {p.set_id for p in data} == {0} and [p.seq for p in data] == list(range(20))
    assert [p.timestamp for p in data] == [i * 100 for i in range(20)]  # media time kept
    assert isinstance(got[-1], RdtStreamEnd) and got[-1].seq == 20
    audio_end = parse_rdt(audio.payloads[-1])[0]
    assert isinstance(audio_end, RdtStreamEnd) and audio_end.stream_id == 1
    store.close()


def test_a_seek_starts_at_the_video_key_frame_before_the_target() -> None:
    store, fill = record_clip()
    obj = fill.commit()
    _, video, _ = play(obj, npt=1.2)  # key frames at 0, 500, 1000, 1500 ms
    first = parse_rdt(video.payloads[0])[0]
    assert isinstance(first, RdtData) and first.payload == b"v10" and first.seq == 0
    store.close()


def test_a_sequence_gap_fails_the_recording() -> None:
    store, fill = new_fill()
    recorder = make_recorder(fill, [4, 6], 0.0)
    recorder.on_frame(4, rdt_data_packet(4, 0, 0, 0, b"a"), 0.0)
    recorder.on_frame(4, rdt_data_packet(4, 2, 0, 100, b"b"), 0.1)
    assert recorder.failed and "gap" in recorder.failed
    store.close()


def test_a_viewer_of_a_fill_that_aborts_gets_a_clean_end() -> None:
    store, fill = new_fill()
    recorder = make_recorder(fill, [4, 6], 0.0)
    for n, (channel, packet) in enumerate(clip()[:10]):
        recorder.on_frame(channel, packet, n * 0.05)
    video, audio = RecordingSink("tcp", 0), RecordingSink("udp", 1)
    replay = RdtReplay(fill, [RdtReplayTrack(video, 0, True), RdtReplayTrack(audio, 1, False)])
    replay.play(100.0, 0.0)
    replay.pump(101.0)  # all ten packets out; it waits at the fill's end
    fill.abort("origin gone")
    for step in range(50):
        replay.pump(101.1 + step * 0.05)
        if replay.end_sent:
            break
    assert replay.ended and replay.end_reason
    assert isinstance(parse_rdt(video.payloads[-1])[0], RdtStreamEnd)
    assert isinstance(parse_rdt(audio.payloads[-1])[0], RdtStreamEnd)
    store.close()


def test_set_id_sink_rewrites_data_packets_only() -> None:
    sink = RecordingSink("tcp", 2)
    viewer = SetIdSink(sink, 2)
    data = rdt_data_packet(0, 7, 1, 700, b"x")
    end = build_stream_end(0, 8, 700)
    viewer.send(data)
    viewer.send(end)
    rewritten = parse_rdt(sink.payloads[0])[0]
    assert isinstance(rewritten, RdtData) and rewritten.set_id == 2 and rewritten.seq == 7
    assert sink.payloads[1] == end  # control packets pass as they are
    assert ends_stream(end) and not ends_stream(data)
    assert viewer.bytes_sent == sink.bytes_sent and viewer.packets_sent == 2


@given(st.binary(max_size=64))
def test_set_id_sink_and_ends_stream_take_any_bytes(data: bytes) -> None:
    sink = RecordingSink("udp", 0)
    SetIdSink(sink, 3).send(data)
    assert len(sink.payloads) == 1 and len(sink.payloads[0]) == len(data)
    ends_stream(data)  # never raises
