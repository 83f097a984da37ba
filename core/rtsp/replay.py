"""Serving a cached RTP clip to one client: restamping, RTP-Info, RTCP SR and BYE. Sans-I/O.

The cache keeps each RTP packet exactly as the origin sent it. A viewer served from the cache
gets the same payloads under its own SSRC (the one its SETUP reply announced), its own
continuous sequence numbers, and timestamps moved by a per-track offset chosen at every PLAY so
that the ``rtptime`` in our RTP-Info maps to the ``npt`` in our Range, as RFC 2326 requires.
Media time comes from the origin's own mapping (its RTP-Info ``rtptime`` at its Range start),
stored with the object, so audio and video stay in sync across seeks.

A seek lands on the latest video key frame at or before the asked time (H.264: an IDR or SPS
NAL unit, also inside STAP-A and at the start of FU-A), so the decoder can start cleanly; the
Range in the reply says where playback really starts.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Protocol

from mediacache.cache.objects import Packet
from mediacache.cache.playout import PacketSource, Playout, available
from mediacache.rtp import (
    Bye,
    SenderReport,
    build_bye,
    build_sdes_cname,
    build_sender_report,
    rewrite_rtp,
    rtp_payload_offset,
    rtp_timestamp,
)
from mediacache.sansio.layer import Sink

MASK32 = 0xFFFFFFFF
NTP_EPOCH = 2_208_988_800
SR_INTERVAL = 5.0
CNAME = "mediacache"
SEND_AHEAD = 0.04
"""Packets leave up to 40 ms before their time: when a thousand viewers' packets fall due
together the last ones still leave on time, and every player's jitter buffer takes 40 ms."""
BYE_DELAY = 0.3
SEEK_WINDOW = 10.0  # seconds of send time searched around a seek target


def signed32(value: int) -> int:
    value &= MASK32
    return value - (1 << 32) if value & 0x80000000 else value


def h264_starts_keyframe(packet: bytes | memoryview) -> bool:
    """Does this RTP/H.264 packet (RFC 6184) begin an IDR picture or its parameter sets?"""
    try:
        off = rtp_payload_offset(bytes(packet[:64]))
    except Exception:
        return False
    if len(packet) <= off:
        return False
    nal = packet[off] & 0x1F
    if nal in (5, 7, 8):
        return True
    if nal == 24 and len(packet) > off + 3:  # STAP-A: first aggregated unit
        return (packet[off + 3] & 0x1F) in (5, 7, 8)
    if nal == 28 and len(packet) > off + 1:  # FU-A: the start fragment of an IDR
        fu = packet[off + 1]
        return bool(fu & 0x80) and (fu & 0x1F) in (5, 7, 8)
    return False


@dataclass
class ReplayTrack:
    """One track of the clip as this viewer receives it."""

    rtp_sink: Sink
    rtcp_sink: Sink
    clock_rate: int
    codec: str
    origin_rtptime: int
    origin_npt: float
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    offset: int = 0
    started: bool = False
    last_ts: int = 0
    last_send: float = 0.0
    packets: int = 0
    octets: int = 0

    def origin_ts_at(self, npt: float) -> int:
        return (self.origin_rtptime + round((npt - self.origin_npt) * self.clock_rate)) & MASK32

    def media_time(self, ts: int) -> float:
        return self.origin_npt + signed32(ts - self.origin_rtptime) / self.clock_rate


class Replay(Protocol):
    """What the RTSP proxy layer needs of a viewer's replay, whatever the data transport."""

    def play(self, now: float, npt: float | None) -> tuple[float, list[tuple[int, int]]]:
        """Start at ``npt`` (None: resume); (real start, per stored track (seq, rtptime))."""
        ...

    def pause(self) -> float:
        """Stop sending; the media time to resume at."""
        ...

    def pump(self, now: float) -> float | None: ...

    @property
    def sinks(self) -> list[Sink]:
        """Per stored track, the viewer's data sink (orders RTP-Info like the tracks)."""
        ...


class RtpReplay:
    """A viewer's playout of a cached clip; drive it with :meth:`pump` from a scheduler."""

    def __init__(
        self,
        source: PacketSource,
        tracks: list[ReplayTrack],
        *,
        wallclock: object = None,
    ) -> None:
        self.tracks = tracks
        self.playout = Playout(source, self._emit, lead=SEND_AHEAD)
        self.source = source
        self._wallclock = wallclock
        self._now = 0.0
        self._next_sr = 0.0
        self._npt_anchor = (0.0, 0.0)
        self.bye_sent = False
        self._bye_at: float | None = None

    # -- control ----------------------------------------------------------------------------

    def play(self, now: float, npt: float | None) -> tuple[float, list[tuple[int, int]]]:
        """Start at ``npt`` (None: resume where paused, or the start). Returns the real start
        (the key frame's time) and, per track, the (seq, rtptime) for RTP-Info."""
        self._now = now
        if npt is None and self.playout.state in ("paused", "playing"):
            index = self.playout.index
        else:
            index = self._seek_index(npt or 0.0)
        start = self._media_time_at(index)
        info = []
        for track in self.tracks:
            if npt is not None or not track.started:
                # choose a new offset so the start maps to a fresh timestamp after the last one
                fresh = (
                    (track.last_ts + track.clock_rate) & MASK32
                    if track.started
                    else secrets.randbits(32)
                )
                track.offset = (fresh - track.origin_ts_at(start)) & MASK32
            track.started = True
            info.append((track.seq, (track.origin_ts_at(start) + track.offset) & MASK32))
        self.playout.play(now, index)
        self.bye_sent = False
        self._bye_at = None
        self._npt_anchor = (start, now)
        self._next_sr = now + 0.5
        return start, info

    def pause(self) -> float:
        self.playout.pause()
        position = self._media_time_at(self.playout.index)
        self._npt_anchor = (position, self._now)
        return position

    @property
    def sinks(self) -> list[Sink]:
        return [t.rtp_sink for t in self.tracks]

    @property
    def ended(self) -> bool:
        return self.playout.state == "ended"

    @property
    def end_reason(self) -> str | None:
        return self.playout.end_reason

    # -- the scheduler's call ---------------------------------------------------------------

    def pump(self, now: float) -> float | None:
        self._now = now
        wake = self.playout.pump(now)
        if now >= self._next_sr and self.playout.state == "playing":
            self._send_reports(now)
            self._next_sr = now + SR_INTERVAL
        if self.playout.state == "ended" and not self.bye_sent:
            # BYE a little after the last packet: a UDP receiver reads RTCP and RTP from two
            # sockets, and a BYE read first would end it before the last packets.
            if self._bye_at is None:
                self._bye_at = now + BYE_DELAY
            if now < self._bye_at:
                return self._bye_at
            self.bye_sent = True
            self._send_reports(now, bye=True)
        if wake is not None:
            return min(wake, self._next_sr)
        return None

    def _emit(self, packet: Packet) -> None:
        track = self.tracks[packet.track]
        payload = packet.payload
        ts = (rtp_timestamp(payload) + track.offset) & MASK32
        out = rewrite_rtp(payload, track.seq, ts, track.ssrc)
        track.seq = (track.seq + 1) & 0xFFFF
        track.last_ts = ts
        track.last_send = self._now
        track.packets += 1
        track.octets += len(out) - 12
        track.rtp_sink.send(out)

    # -- RTCP -------------------------------------------------------------------------------

    def _send_reports(self, now: float, *, bye: bool = False) -> None:
        """One compound RTCP packet per track: SR, SDES CNAME, and BYE at the end (ffmpeg
        ignores RTCP packets shorter than an RTP header, so a lone BYE would go unseen)."""
        wall = self._wall(now)
        sec = int(wall) + NTP_EPOCH
        frac = int((wall % 1.0) * (1 << 32)) & MASK32
        npt0, wall0 = self._npt_anchor
        npt_now = npt0 + (now - wall0) if self.playout.state == "playing" else npt0
        for track in self.tracks:
            if not track.packets:
                continue
            # one media clock for every track, so the receiver's lip sync is right
            ts = (track.origin_ts_at(npt_now) + track.offset) & MASK32
            report = SenderReport(
                track.ssrc, sec & MASK32, frac, ts, track.packets, track.octets & MASK32
            )
            compound = build_sender_report(report) + build_sdes_cname(track.ssrc, CNAME)
            if bye:
                compound += build_bye(Bye((track.ssrc,)))
            track.rtcp_sink.send(compound)

    def _wall(self, now: float) -> float:
        clock = self._wallclock
        return float(clock()) if callable(clock) else now

    # -- seeking ----------------------------------------------------------------------------

    def _media_time_at(self, index: int) -> float:
        """Media (npt) time of the packet at ``index``, by its track's origin mapping."""
        n = available(self.source)
        if index >= n:
            index = n - 1
        if index < 0:
            return 0.0
        packet = self.source.packet(index)
        track = self.tracks[packet.track]
        return max(0.0, track.media_time(rtp_timestamp(packet.payload)))

    def _seek_index(self, npt: float) -> int:
        """The packet to start from for ``npt``: the latest video key frame at or before it.

        Stored times are send times, which lead or lag media time by the origin's buffering,
        so the window found by send time is searched by media time (RTP timestamps)."""
        source = self.source
        n = available(source)
        if n == 0 or npt <= 0:
            return 0
        low = source.first_index_at(max(0.0, npt - SEEK_WINDOW))
        high = min(n, source.first_index_at(npt + SEEK_WINDOW) + 1)
        video = {i for i, t in enumerate(self.tracks) if t.codec.upper() == "H264"}
        best, best_ts = low, -1
        for i in range(low, high):
            packet = source.packet(i)
            if video and packet.track not in video:
                continue
            ts = rtp_timestamp(packet.payload)
            after = self.tracks[packet.track].media_time(ts) > npt + 1e-3
            if not video and not after:
                continue
            if not video:
                return i  # audio only: the first packet at the target
            # the first packet of the key frame's access unit (SPS, PPS, then the IDR slices)
            if not after and ts != best_ts and h264_starts_keyframe(packet.payload):
                best, best_ts = i, ts
        return best
