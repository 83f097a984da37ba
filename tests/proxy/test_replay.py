"""RtpReplay and Playout: pacing, restamping, RTP-Info, seeking, RTCP. No sockets, no clock."""

from __future__ import annotations

import itertools
import struct

from hypothesis import given
from hypothesis import strategies as st

from mediacache.cache.objects import CacheKey, TrackMeta
from mediacache.cache.store import CacheStore
from mediacache.rtp import parse_sender_report, rtcp_has_bye, rtp_seq, rtp_ssrc, rtp_timestamp
from mediacache.rtsp.replay import ReplayTrack, RtpReplay, h264_starts_keyframe
from mediacache.testing.playbook import RecordingSink

CLOCK = 90000


def rtp(seq: int, ts: int, payload: bytes, pt: int = 96) -> bytes:
    return struct.pack(">BBHII", 0x80, pt, seq & 0xFFFF, ts & 0xFFFFFFFF, 0x1234) + payload


IDR = bytes([0x65, 0x88])  # NAL type 5
P = bytes([0x41, 0x9A])  # NAL type 1


def clip(seconds: int = 4, fps: int = 25, gop: int = 25):  # type: ignore[no-untyped-def]
    """A committed one-track object: a frame every 1/fps s, key frames every ``gop``."""
    store = CacheStore(None, memory_limit=10**8, disk_limit=0)
    fill = store.begin_fill(
        CacheKey.make("quicktime", "rtsp://o/c", "v"),
        tracks=[TrackMeta(track_id=0, clock_rate=CLOCK, codec="H264", extra={"rtptime": "1000"})],
        duration=float(seconds),
    )
    for i in range(seconds * fps):
        fill.add_packet(
            0, i / fps, rtp(500 + i, 1000 + i * CLOCK // fps, IDR if i % gop == 0 else P)
        )
    return fill.commit()


def replay(obj):  # type: ignore[no-untyped-def]
    track = ReplayTrack(RecordingSink("udp", 1), RecordingSink("rtcp", 2), CLOCK, "H264", 1000, 0.0)
    return RtpReplay(obj, [track], wallclock=lambda: 1_700_000_000.0), track


def test_playout_is_paced_by_the_stored_times() -> None:
    r, track = replay(clip())
    r.play(100.0, None)
    wake = r.pump(100.0)
    assert len(track.rtp_sink.payloads) == 2  # t=0, and t=0.04 within the 40 ms send-ahead
    assert wake is not None and 100.03 < wake <= 100.05  # t=0.08 is due 40 ms early
    r.pump(101.0)
    assert len(track.rtp_sink.payloads) == 27  # 0 .. 1.04 s inclusive


def test_restamping_keeps_payloads_and_makes_one_continuous_stream() -> None:
    obj = clip()
    r, track = replay(obj)
    _, [(seq0, ts0)] = r.play(0.0, None)
    r.pump(10.0)
    out = track.rtp_sink.payloads
    assert len(out) == 100
    assert [rtp_seq(p) for p in out] == [(seq0 + i) & 0xFFFF for i in range(100)]
    assert rtp_timestamp(out[0]) == ts0  # RTP-Info rtptime is the first packet's timestamp
    assert all(p[12:] == bytes(obj.packet(i).payload[12:]) for i, p in enumerate(out))
    assert {rtp_ssrc(p) for p in out} == {track.ssrc}


def test_seek_lands_on_the_key_frame_and_rtp_info_maps_it() -> None:
    r, track = replay(clip())
    r.play(0.0, None)
    r.pump(0.5)
    last_seq = rtp_seq(track.rtp_sink.payloads[-1])
    start, [(seq, rtptime)] = r.play(10.0, 2.5)
    assert start == 2.0  # key frames at 0, 1, 2, 3 s
    assert seq == (last_seq + 1) & 0xFFFF  # sequence numbers go on across the seek
    before = len(track.rtp_sink.payloads)
    r.pump(10.0)
    first = track.rtp_sink.payloads[before]
    assert h264_starts_keyframe(first) and rtp_timestamp(first) == rtptime


def test_pause_stops_and_resume_continues() -> None:
    r, track = replay(clip())
    r.play(0.0, None)
    r.pump(1.0)
    n = len(track.rtp_sink.payloads)
    r.pause()
    assert r.pump(5.0) is None and len(track.rtp_sink.payloads) == n
    r.play(5.0, None)
    r.pump(5.5)
    seqs = [rtp_seq(p) for p in track.rtp_sink.payloads]
    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
    assert len(seqs) > n + 10


def test_the_end_sends_sr_sdes_bye_after_a_delay() -> None:
    r, track = replay(clip(seconds=1))
    r.play(0.0, None)
    assert r.pump(2.0) is not None  # ended: waits before the BYE
    assert not any(rtcp_has_bye(p) for p in track.rtcp_sink.payloads)
    assert r.pump(2.5) is None
    final = track.rtcp_sink.payloads[-1]
    assert rtcp_has_bye(final)
    sr = parse_sender_report(final)
    assert sr.packet_count == 25 and sr.ssrc == track.ssrc


@given(st.binary(max_size=40))
def test_keyframe_detection_never_raises(data: bytes) -> None:
    h264_starts_keyframe(data)
