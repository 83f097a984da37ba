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

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from mediacache.cache.objects import Packet
from mediacache.cache.playout import PacketSource, Playout, available
from mediacache.cache.store import Fill
from mediacache.errors import ProtocolError
from mediacache.rtsp.caching import Recorder
from mediacache.sansio.layer import Sink
from mediacache.splitter import FeedTrack
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.wire.rdt import (
    STREAM_END,
    RdtStreamEnd,
    build_rdt,
    build_stream_end,
    parse_rdt,
    rdt_data_header,
    rdt_data_payload_offset,
    rewrite_rdt_data,
    split_rdt,
)

__all__ = [
    "RdtContinuity",
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


_SHARED_CLOCK_MS = 60_000
"""A successor's first data packet this far (or less) behind the last one the viewers had is
taken to be on the same live clock (the key frame before "now": a GOP behind at most)."""


class RdtContinuity:
    """Joins a successor's RDT stream of one track (:meth:`RealDialect.feed_continuity`) to
    what the track's viewers had, once in the feed path, not per viewer.

    An origin numbers each session's RDT sequence on its own (the reference origin from 0), so
    the successor's numbers would jump; a new live PLAY starts at the key frame before "now" on
    the live clock every session shares, so its first packets repeat what the viewers had.
    Data packets with a timestamp before the last one sent are dropped. At the *same*
    timestamp (the fragments of one frame, which both sessions get in the same order) those up
    to and including the one equal to the last sent (stream, key flag and payload) are
    dropped and the rest go on: the frame's fragments the former owner had not sent yet still
    reach the viewers, none twice (dropping all would cut the frame, passing all repeat it).
    A first packet more than :data:`_SHARED_CLOCK_MS` behind is on another clock: none
    dropped. From the first packet that goes on, sequence numbers (data and stream-end
    packets) continue from the last one sent, modulo 0xFF00 as the origin and
    :class:`RdtReplay` count; other RDT packets go as they are, and so does what is not RDT
    (as the owner's path forwards it). When nothing needs renumbering (the numbering already
    continues, or there was nothing to continue) the fan-outs go straight on the channel
    (``route``): no per-packet cost.
    """

    __slots__ = (
        "_delta",
        "_last",
        "_last_ts",
        "_matched",
        "_next",
        "_route",
        "bytes_sent",
        "mode",
        "packets_sent",
        "track",
    )

    def __init__(self, track: FeedTrack, route: Callable[[Sink, Sink], None]) -> None:
        self.track = track
        self._route = route
        self.bytes_sent = self.packets_sent = 0
        self._delta = 0
        self._next: int | None = None
        """The sequence number the viewers' next data packet needs (None: nothing sent)."""
        self._last_ts = 0
        self._last: tuple[int, bool, bytes] | None = None
        """(stream, key frame, payload) of the last data packet the viewers had."""
        self._matched = False
        self.mode = "catch-up"
        """catch-up (dropping what viewers had) | renumber | direct (routed straight)"""
        try:
            packets = split_rdt(track.rtp.last) if track.rtp.last else []
        except RealProtocolError:
            packets = []
        for packet in reversed(packets):
            if (packet[1] << 8) | packet[2] < SEQ_MODULO:
                try:
                    _, seq, stream, key, ts = rdt_data_header(packet)
                except RealProtocolError:
                    break
                self._next, self._last_ts = (seq + 1) % SEQ_MODULO, ts
                self._last = stream, key, packet[rdt_data_payload_offset(packet) :]
                break

    def send(self, payload: bytes) -> None:
        if self.mode == "renumber":
            payload = self._renumber(payload)
        elif self.mode == "catch-up":
            payload = self._catch_up(payload)
        if payload:
            self.track.rtp.send(payload)

    def _catch_up(self, payload: bytes) -> bytes:
        """The part of ``payload`` the viewers did not have, renumbered (b"": none)."""
        try:
            packets = split_rdt(payload)
        except RealProtocolError:
            return payload  # not RDT: as it comes
        kept: list[bytes] = []
        for i, packet in enumerate(packets):
            if (packet[1] << 8) | packet[2] >= SEQ_MODULO:
                kept.append(self._renumber_control(packet))
                continue
            try:
                _, seq, stream, key, ts = rdt_data_header(packet)
            except RealProtocolError:
                kept.append(packet)
                continue
            if self._had(stream, key, ts, packet):
                continue
            if self._next is None:  # nothing sent to continue: as it comes
                self._direct()
                return b"".join(kept + packets[i:])
            self._delta = (self._next - seq) % SEQ_MODULO
            if self._delta == 0:  # numbered on already, and nothing more to drop
                self._direct()
                return b"".join(kept + packets[i:])
            self.mode = "renumber"
            return b"".join([*kept, self._renumber(b"".join(packets[i:]))])
        return b"".join(kept)

    def _had(self, stream: int, key: bool, ts: int, packet: bytes) -> bool:
        """Did the viewers have this data packet already (see the class docstring)?"""
        if self._last is None:
            return False
        behind = (self._last_ts - ts) & 0xFFFFFFFF
        if 0 < behind <= _SHARED_CLOCK_MS:
            return True
        if behind != 0:  # ahead, or another clock: none of it is theirs
            self._last = None
            return False
        if self._matched:
            return False
        self._matched = self._last == (stream, key, packet[rdt_data_payload_offset(packet) :])
        return True

    def _renumber(self, payload: bytes) -> bytes:
        """``payload`` with each data and stream-end packet's sequence moved by the delta."""
        if len(payload) > 7 and payload[1] < 0xFF and not payload[0] & 0x80:
            return self._renumber_data(payload)  # one data packet, the whole frame: usual
        try:
            packets = split_rdt(payload)
        except RealProtocolError:
            return payload
        return b"".join(
            self._renumber_data(p) if (p[1] << 8) | p[2] < SEQ_MODULO else self._renumber_control(p)
            for p in packets
        )

    def _renumber_data(self, packet: bytes) -> bytes:
        """One data packet with its sequence number moved by the delta (two bytes patched)."""
        seq = (packet[1] << 8) | packet[2]
        try:
            return rewrite_rdt_data(packet, seq=(seq + self._delta) % SEQ_MODULO)
        except ProtocolError:
            return packet  # not a data packet after all: as it comes

    def _renumber_control(self, packet: bytes) -> bytes:
        """A stream-end packet's ``seq`` (the next data packet's) renumbered; others as is."""
        if (packet[1] << 8) | packet[2] != STREAM_END:
            return packet
        try:
            (end,) = parse_rdt(packet)
            if not isinstance(end, RdtStreamEnd):
                return packet
            if self.mode == "renumber":
                seq = (end.seq + self._delta) % SEQ_MODULO
            elif self._next is not None:  # nothing new passed yet: the viewers' next
                seq = self._next
            else:
                return packet
            return build_rdt(replace(end, seq=seq))
        except (ProtocolError, ValueError):
            return packet

    def _direct(self) -> None:
        self.mode = "direct"
        self._route(self.track.rtp, self.track.rtcp)


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
