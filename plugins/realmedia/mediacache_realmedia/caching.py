"""Caching RDT: the recorder of a Real MISS and the replay of a Real HIT. Sans-I/O.

The core's RTSP layer drives both through :class:`~mediacache.rtsp.proxy.RtspDialect`
(``make_recorder``, ``make_replay``); the cache itself stores packets and times only.

What is stored: every RDT *data* packet the origin sent on a track's channel, as it came (one
packet per stored packet; a frame holding several is split). Control packets (RTT, bandwidth
reports) are per session and not stored; a stream-end packet on every track completes the
fill. A gap in a stream's sequence numbers (RDT counts to 0xFEFF, then wraps) aborts it.

What a viewer gets: the stored packets at their stored pace, each rewritten for this viewer
(:func:`~mediacache_realmedia.wire.rdt.rewrite_rdt_data`): the set id its transport needs
(the interleaved channel over TCP, the stream number over UDP, as the reference origin does)
and its own continuous sequence numbers. Timestamps are media time in milliseconds and stay as
they are: a seek sends the packets from the key frame before the target with their own
timestamps, as a RealServer does. After the last packet each track gets a stream-end packet.
A key frame is an even ASM rule (rules come in pairs, ``stream << 1 | not keyframe``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mediacache.cache.objects import Packet
from mediacache.cache.playout import PacketSource, Playout, available
from mediacache.cache.store import Fill
from mediacache.rtsp.caching import Recorder
from mediacache.sansio.layer import Sink
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.wire.rdt import (
    STREAM_END,
    build_stream_end,
    rdt_data_header,
    rewrite_rdt_data,
    split_rdt,
)

__all__ = [
    "RdtRecorder",
    "RdtReplay",
    "RdtReplayTrack",
    "RecordedStream",
    "SetIdSink",
    "ends_stream",
]

SEQ_MODULO = 0xFF00
SEND_AHEAD = 0.04  # as the RTP replay: a thousand viewers' packets due together still leave on time
SEEK_WINDOW = 10.0


@dataclass
class RecordedStream:
    meta_index: int
    expected_seq: int | None = None
    ended: bool = False


@dataclass
class RdtRecorder(Recorder):
    """Records the RDT data packets of a MISS (origin channel -> stored track)."""

    streams: dict[int, RecordedStream] = field(default_factory=dict)

    @property
    def channels(self) -> frozenset[int]:
        return frozenset(self.streams)

    def on_frame(self, channel: int, payload: bytes, now: float) -> bool:
        stream = self.streams[channel]
        try:
            packets = split_rdt(payload)
            for packet in packets:
                kind = (packet[1] << 8) | packet[2]
                if kind == STREAM_END:
                    stream.ended = True
                elif kind < SEQ_MODULO:
                    _, seq, _, _, _ = rdt_data_header(packet)
                    if stream.expected_seq is not None and seq != stream.expected_seq:
                        self.failed = f"RDT sequence gap on stream {stream.meta_index}"
                        return False
                    stream.expected_seq = (seq + 1) % SEQ_MODULO
                    self.fill.add_packet(stream.meta_index, self.clip_time(now), packet)
        except RealProtocolError as exc:
            self.failed = f"bad RDT from the origin: {exc}"
            return False
        return all(s.ended for s in self.streams.values())


def ends_stream(payload: bytes) -> bool:
    """Does this datagram or frame hold a stream-end packet? (Cheap for data packets.)"""
    if len(payload) < 3 or (payload[1] < 0xFF and not payload[0] & 0x80):
        return False  # one data packet without a length: the whole frame
    try:
        return any((p[1] << 8) | p[2] == STREAM_END for p in split_rdt(payload))
    except RealProtocolError:
        return False


def make_recorder(fill: Fill, channels: list[int], now: float) -> RdtRecorder:
    """``channels[i]``: the origin channel of stored track ``i``."""
    streams = {ch: RecordedStream(meta_index=i) for i, ch in enumerate(channels)}
    return RdtRecorder(fill, now, streams=streams)


class SetIdSink:
    """A viewer's sink that gives each RDT data packet the set id this viewer's transport
    needs (its interleaved channel over TCP, the stream number over UDP) when the origin's
    differs: the origin is asked on one channel, a live feed is shared by viewers on others.
    The bytes are copied only when they change."""

    __slots__ = ("_byte0_bits", "_sink", "set_id")

    def __init__(self, sink: Sink, set_id: int) -> None:
        self._sink = sink
        self.set_id = set_id
        self._byte0_bits = set_id << 1

    @property
    def bytes_sent(self) -> int:
        return self._sink.bytes_sent

    @property
    def packets_sent(self) -> int:
        return self._sink.packets_sent

    def send(self, payload: bytes) -> None:
        if (
            len(payload) > 3
            and payload[1] < 0xFF  # a data packet (below 0xFF00)
            and (payload[0] >> 1) & 0x1F != self.set_id
            and (payload[0] >> 1) & 0x1F != 31
        ):
            out = bytearray(payload)
            out[0] = (out[0] & 0xC1) | self._byte0_bits
            payload = bytes(out)
        self._sink.send(payload)


@dataclass
class RdtReplayTrack:
    """One stored track as this viewer receives it."""

    sink: Sink
    set_id: int
    video: bool
    seq: int = 0
    last_ts: int = 0


class RdtReplay:
    """A viewer's playout of a cached Real clip (the core's ``Replay``)."""

    def __init__(self, source: PacketSource, tracks: list[RdtReplayTrack]) -> None:
        self.source = source
        self.tracks = tracks
        self.playout = Playout(source, self._emit, lead=SEND_AHEAD)
        self.end_sent = False

    @property
    def sinks(self) -> list[Sink]:
        return [t.sink for t in self.tracks]

    @property
    def ended(self) -> bool:
        return self.playout.state == "ended"

    @property
    def end_reason(self) -> str | None:
        return self.playout.end_reason

    def play(self, now: float, npt: float | None) -> tuple[float, list[tuple[int, int]]]:
        if npt is None and self.playout.state in ("paused", "playing"):
            index = self.playout.index
        else:
            index = self._seek_index(npt or 0.0)
        start = self._media_time_at(index)
        self.playout.play(now, index)
        self.end_sent = False
        return start, [(t.seq, round(start * 1000)) for t in self.tracks]

    def pause(self) -> float:
        self.playout.pause()
        return self._media_time_at(self.playout.index)

    def pump(self, now: float) -> float | None:
        wake = self.playout.pump(now)
        if self.playout.state == "ended" and not self.end_sent:
            # the whole clip, or a fill that aborted under a joiner: either way the player
            # gets a clean end (ffmpeg over TCP ends its input at a stream-end packet)
            self.end_sent = True
            for track in self.tracks:
                track.sink.send(build_stream_end(track.set_id, track.seq, track.last_ts))
        return wake

    def _emit(self, packet: Packet) -> None:
        track = self.tracks[packet.track]
        try:
            out = rewrite_rdt_data(packet.payload, set_id=track.set_id, seq=track.seq)
            track.last_ts = rdt_data_header(packet.payload)[4]
        except RealProtocolError:
            return  # the fill checked every packet; a damaged object is refetched, not sent
        track.seq = (track.seq + 1) % SEQ_MODULO
        track.sink.send(out)

    def _media_time_at(self, index: int) -> float:
        n = available(self.source)
        if n == 0:
            return 0.0
        payload = self.source.packet(min(max(index, 0), n - 1)).payload
        try:
            return rdt_data_header(payload)[4] / 1000
        except RealProtocolError:
            return 0.0

    def _seek_index(self, npt: float) -> int:
        """The last video key frame at or before ``npt`` (the first packet at it, audio only)."""
        source = self.source
        n = available(source)
        if n == 0 or npt <= 0:
            return 0
        low = source.first_index_at(max(0.0, npt - SEEK_WINDOW))
        high = min(n, source.first_index_at(npt + SEEK_WINDOW) + 1)
        video = {i for i, t in enumerate(self.tracks) if t.video}
        target = round(npt * 1000)
        best = low
        for i in range(low, high):
            packet = source.packet(i)
            if video and packet.track not in video:
                continue
            try:
                _, _, _, keyframe, ts = rdt_data_header(packet.payload)
            except RealProtocolError:
                continue
            if ts > target:
                return best if video else i
            if keyframe or not video:
                best = i
        return best
