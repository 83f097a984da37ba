"""A cheap RTSP/RTP origin for load tests: replays a recorded RTP packet list, live or on demand.

GStreamer's live mount encodes x264 in real time, which costs CPU that would distort proxy
measurements on a 2-core machine. This origin instead records a clip once (an RTP packet list
captured from the GStreamer VOD origin over TCP interleaved, with the SDP and the RTP-Info of the
PLAY reply) and then sends those packets again, paced by their RTP timestamps.

Live (default): one shared clock started with the server, looping forever (RTP timestamps and
sequence numbers keep increasing across loops), ``a=range:npt=now-``; a client that joins gets
the stream from the current position. VOD (``--vod``): each PLAY starts the clip from its Range
start (default 0) and ends it with an RTCP BYE on every track. Either way every client session
has its own SSRC, sequence numbers and timestamp base, as from a real server, and gets an RTCP
sender report per track every 5 s.

Transports: RTP/AVP/TCP interleaved (what the proxy always uses toward an origin) and RTP/AVP
over UDP (``client_port``; sent from one shared server port pair). RTSP methods: OPTIONS,
DESCRIBE (Content-Base), SETUP, PLAY (Range, RTP-Info), PAUSE, GET_PARAMETER, SET_PARAMETER,
TEARDOWN; ``Session: ID;timeout=T`` and sessions idle for T seconds are dropped. Any path serves
the stream.

Usage::

    python benchmarks/replay_origin.py --record-only          # capture (once, ~10 s)
    python benchmarks/replay_origin.py --port 8554            # live at rtsp://127.0.0.1:8554/live
    python benchmarks/replay_origin.py --port 8554 --vod      # on demand, BYE at the end

It prints ``READY rtsp://HOST:PORT/`` on stdout once listening, and a JSON line of counters on
stderr when it stops (SIGINT/SIGTERM or ``--max-seconds``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import secrets
import signal
import socket
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from mediacache.rtsp import (
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtpInfo,
    RtspReader,
    TransportSpec,
    build_request,
    build_response,
    build_rtp_info,
    make_response,
    parse_range,
    parse_rtp_info,
    parse_sdp,
    parse_transports,
    resolve_url,
)

MAGIC = b"MCRTPREC1\n"
DEFAULT_RECORDING = Path(tempfile.gettempdir()) / "mediacache-bench" / "h264_aac_300k-10s.rtprec"
"""The 10 s H.264 + AAC test pattern at about 300 kbit/s (the viewer rate the issues name)."""
SR_INTERVAL = 5.0
MAX_TCP_BACKLOG = 4 * 1024 * 1024  # bytes queued to one client before its packets are dropped
PUBLIC = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, GET_PARAMETER, SET_PARAMETER, TEARDOWN"
_RTPMAP_RE = re.compile(r"a=rtpmap:(\d+)\s+([^/\s]+)/(\d+)")
_TRACK_RE = re.compile(r"trackID=(\d+)/?$")
_HDR = struct.Struct(">HII")  # seq, timestamp, ssrc at offset 2 of an RTP header
_FRAME = struct.Struct(">BBH")
_SR = struct.Struct(">BBHIIIIII")  # V/P/RC, PT=200, length=6, ssrc, ntp sec/frac, ts, pkts, bytes
_BYE = struct.Struct(">BBHI")
_NTP_EPOCH = 2208988800
M32 = 0xFFFFFFFF


# -- the recording ------------------------------------------------------------------------------


@dataclass
class TrackInfo:
    """One media section of the recording."""

    media_lines: list[str]
    clock_rate: int
    rtptime: int  # RTP timestamp of npt 0 (from RTP-Info), the zero of the offsets


@dataclass
class Recording:
    """The SDP's session lines, the tracks and every RTP packet with its track."""

    session_lines: list[str]
    tracks: list[TrackInfo]
    packets: list[tuple[int, bytes]]  # (track index, whole RTP packet as received)
    duration: float = 0.0
    # Derived by prepare(): per packet (offset s, track, timestamp relative to npt 0, packet).
    schedule: list[tuple[float, int, int, bytes]] = field(default_factory=list)

    def prepare(self) -> None:
        """Compute each packet's offset from its RTP timestamp; set the loop period."""
        sched = []
        for track, pkt in self.packets:
            info = self.tracks[track]
            rel = (_HDR.unpack_from(pkt, 2)[1] - info.rtptime) & M32
            if rel >= 0x80000000:
                rel -= 0x100000000
            sched.append((rel / info.clock_rate, track, rel, pkt))
        sched.sort(key=lambda s: s[0])
        start = sched[0][0] if sched else 0.0
        if start < 0:  # a packet stamped before npt 0: shift everything
            sched = [(o - start, t, r, p) for o, t, r, p in sched]
        self.schedule = sched
        last = sched[-1][0] if sched else 0.0
        self.duration = max(self.duration, last + 0.04)

    def save(self, path: Path) -> None:
        head = json.dumps(
            {
                "session_lines": self.session_lines,
                "duration": self.duration,
                "tracks": [
                    {"media_lines": t.media_lines, "clock_rate": t.clock_rate, "rtptime": t.rtptime}
                    for t in self.tracks
                ],
            }
        ).encode()
        parts = [MAGIC, struct.pack(">I", len(head)), head]
        for track, pkt in self.packets:
            parts.append(struct.pack(">BH", track, len(pkt)))
            parts.append(pkt)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(b"".join(parts))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Recording:
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            raise ValueError(f"{path}: not a recording")
        pos = len(MAGIC)
        (hlen,) = struct.unpack_from(">I", data, pos)
        head = json.loads(data[pos + 4 : pos + 4 + hlen])
        pos += 4 + hlen
        packets = []
        while pos < len(data):
            track, length = struct.unpack_from(">BH", data, pos)
            packets.append((track, data[pos + 3 : pos + 3 + length]))
            pos += 3 + length
        tracks = [
            TrackInfo(t["media_lines"], t["clock_rate"], t["rtptime"]) for t in head["tracks"]
        ]
        rec = cls(head["session_lines"], tracks, packets, head["duration"])
        rec.prepare()
        return rec


def clock_rate_of(media_lines: list[str] | tuple[str, ...]) -> int:
    """Clock rate from the first ``a=rtpmap`` of a media section (90 kHz when absent)."""
    for line in media_lines:
        if m := _RTPMAP_RE.match(line):
            return int(m.group(3))
    return 90000


class _BlockingRtsp:
    """Just enough blocking RTSP client to capture a clip over TCP interleaved."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.reader = RtspReader(max_body=4 * 1024 * 1024)
        self.cseq = 0
        self.session: str | None = None
        self.frames: list[InterleavedFrame] = []

    def request(self, method: str, url: str, headers: list[tuple[str, str]]) -> Response:
        self.cseq += 1
        pairs = [("CSeq", str(self.cseq)), *headers]
        if self.session:
            pairs.append(("Session", self.session))
        self.sock.sendall(build_request(Request(method, url, Headers(pairs))))
        while True:
            ev = self.reader.next_event()
            if isinstance(ev, Response):
                if ev.status >= 300:
                    raise RuntimeError(f"{method} {url}: {ev.status} {ev.reason}")
                if (sess := ev.headers.get("Session")) is not None:
                    self.session = sess.split(";")[0].strip()
                return ev
            if isinstance(ev, InterleavedFrame):
                self.frames.append(ev)
                continue
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("origin closed the connection")
            self.reader.receive_data(data)

    def read_until_bye(self, channels: int, limit: float) -> None:
        """Collect frames until every RTCP channel carried a BYE, or ``limit`` seconds."""
        deadline = time.monotonic() + limit
        byes: set[int] = set()
        self.sock.settimeout(0.5)
        while time.monotonic() < deadline and len(byes) < channels:
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                break
            self.reader.receive_data(data)
            for ev in self.reader.events():
                if isinstance(ev, InterleavedFrame):
                    self.frames.append(ev)
                    if ev.channel % 2 and _has_bye(ev.payload):
                        byes.add(ev.channel)

    def close(self) -> None:
        self.sock.close()


def _has_bye(payload: bytes) -> bool:
    pos = 0
    while pos + 4 <= len(payload):
        if payload[pos + 1] == 203:
            return True
        pos += (int.from_bytes(payload[pos + 2 : pos + 4], "big") + 1) * 4
    return False


def capture(url: str, limit: float = 120.0) -> Recording:
    """Play ``url`` once over TCP interleaved and keep every RTP packet, the SDP and RTP-Info."""
    host_port = url.split("://", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    client = _BlockingRtsp(host, int(port))
    try:
        resp = client.request("DESCRIBE", url, [("Accept", "application/sdp")])
        base = resp.headers.get("Content-Base") or url
        sdp = parse_sdp(resp.body)
        controls = []
        for i, media in enumerate(sdp.media):
            control = resolve_url(base, media.control or "")
            transport = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"
            client.request("SETUP", control, [("Transport", transport)])
            controls.append(control)
        play = client.request("PLAY", base, [("Range", "npt=0-")])
        infos = parse_rtp_info(play.headers.get("RTP-Info") or "url=x")
        client.read_until_bye(len(sdp.media), limit)
    finally:
        client.close()
    by_url = {info.url.rstrip("/"): info for info in infos}
    frames = client.frames
    tracks = []
    for i, media in enumerate(sdp.media):
        info = by_url.get(controls[i].rstrip("/"))
        if info is None and i < len(infos):
            info = infos[i]
        first = next((f for f in frames if f.channel == 2 * i and len(f.payload) >= 12), None)
        rtptime = info.rtptime if info is not None and info.rtptime is not None else None
        if rtptime is None:
            rtptime = _HDR.unpack_from(first.payload, 2)[1] if first else 0
        tracks.append(TrackInfo(list(media.lines), clock_rate_of(media.lines), rtptime))
    packets = [
        (f.channel // 2, f.payload)
        for f in frames
        if f.channel % 2 == 0 and f.channel // 2 < len(tracks) and len(f.payload) >= 12
    ]
    rng = sdp.range
    duration = rng.end if rng is not None and rng.end is not None else 0.0
    rec = Recording(list(sdp.session_lines), tracks, packets, duration)
    rec.prepare()
    return rec


def ensure_recording(path: Path = DEFAULT_RECORDING, seconds: float = 10.0) -> Path:
    """Record the test clip through the GStreamer VOD origin unless ``path`` exists already."""
    if path.exists():
        return path
    from mediacache.testing.peers import GstRtspOrigin, make_clip

    clip = make_clip(seconds=seconds, kind="h264_aac_300k")
    with GstRtspOrigin({"clip": clip}, live=()) as origin:
        rec = capture(origin.url("/vod/clip"), limit=seconds + 30)
    if not rec.packets:
        raise RuntimeError("the capture holds no RTP packet")
    rec.save(path)
    return path


def stream_rate(path: Path = DEFAULT_RECORDING) -> tuple[float, float]:
    """(RTP packets per second, kbit/s of RTP packets, headers included) of one viewer."""
    rec = Recording.load(path)
    size = sum(len(pkt) for _, pkt in rec.packets)
    return len(rec.packets) / rec.duration, 8 * size / rec.duration / 1000


# -- serving ------------------------------------------------------------------------------------


Patch = tuple[int, int, int, int, int]


class Batch:
    """Packets due at one instant: (track, relative RTP timestamp, feed sequence, packet).

    Interleaved framings of the whole batch are built once per channel layout and shared by
    every TCP session with that layout (``template``); sessions then patch seq/ts/ssrc in place.
    """

    __slots__ = ("items", "templates")

    def __init__(self, items: list[tuple[int, int, int, bytes]]) -> None:
        self.items = items
        self.templates: dict[tuple[int, ...], tuple[bytes, list[Patch]]] = {}

    def template(self, layout: tuple[int, ...]) -> tuple[bytes, list[Patch]]:
        """(framed bytes, [(offset of seq, track, feed seq, rel ts, payload size)]); channel -1
        skips a track."""
        cached = self.templates.get(layout)
        if cached is not None:
            return cached
        parts: list[bytes] = []
        patches = []
        pos = 0
        for track, rel, fseq, pkt in self.items:
            channel = layout[track]
            if channel < 0:
                continue
            parts.append(_FRAME.pack(0x24, channel, len(pkt)))
            parts.append(pkt)
            patches.append((pos + 6, track, fseq, rel, len(pkt) - 12))
            pos += 4 + len(pkt)
        cached = (b"".join(parts), patches)
        self.templates[layout] = cached
        return cached


class Feed:
    """Walks the schedule in real time and hands each batch to its subscribers.

    Live: one feed for the server, looping; VOD: one feed per PLAY, ending with ``on_end``.
    """

    def __init__(
        self,
        rec: Recording,
        loop: asyncio.AbstractEventLoop,
        *,
        looping: bool,
        start_offset: float = 0.0,
    ) -> None:
        self.rec = rec
        self.loop = loop
        self.looping = looping
        self.subscribers: list[Session] = []
        self.index = 0
        self.cycle = 0
        self.fseq = [0] * len(rec.tracks)
        self.base = loop.time() - start_offset
        self.wall_base = time.time() - start_offset
        self.handle: asyncio.TimerHandle | None = None
        self.stopped = False
        sched = rec.schedule
        while self.index < len(sched) and sched[self.index][0] < start_offset:
            self.index += 1
        self.period_ts = [round(rec.duration * t.clock_rate) for t in rec.tracks]

    def start(self) -> None:
        self._arm()

    def stop(self) -> None:
        self.stopped = True
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def position(self) -> float:
        """Seconds since the feed's npt 0, loops included."""
        return self.loop.time() - self.base

    def rel_ts_now(self, track: int) -> int:
        """The relative RTP timestamp of 'now' on ``track`` (for RTP-Info and SRs)."""
        return round(self.position() * self.rec.tracks[track].clock_rate)

    def next_fseq(self, track: int) -> int:
        return self.fseq[track]

    def _due(self) -> float | None:
        sched = self.rec.schedule
        if self.index >= len(sched):
            if not self.looping or not sched:
                return None
            self.index = 0
            self.cycle += 1
        return self.base + self.cycle * self.rec.duration + sched[self.index][0]

    def _arm(self) -> None:
        due = self._due()
        if due is None:  # end of the clip: BYE at its end time, after the last packet
            end = self.base + self.rec.duration
            self.handle = self.loop.call_at(max(end, self.loop.time() + 0.05), self._end)
            return
        self.handle = self.loop.call_at(due, self._tick)

    def _end(self) -> None:
        self.handle = None
        self.stopped = True
        for sub in list(self.subscribers):
            sub.feed_ended(self)

    def _tick(self) -> None:
        self.handle = None
        if self.stopped:
            return
        now = self.loop.time()
        sched = self.rec.schedule
        items = []
        fseq = self.fseq
        while True:
            due = self._due()
            if due is None or due > now + 0.0005 or len(items) >= 512:
                break
            _, track, rel, pkt = sched[self.index]
            rel += self.cycle * self.period_ts[track]
            items.append((track, rel, fseq[track], pkt))
            fseq[track] += 1
            self.index += 1
        if items:
            batch = Batch(items)
            for sub in self.subscribers:
                sub.deliver(batch)
        self._arm()


class Stats:
    sessions = 0
    packets = 0
    bytes = 0
    dropped = 0
    connections = 0


@dataclass
class TrackState:
    """One set-up track of a session: its transport and its own RTP numbering."""

    ssrc: int
    seq_base: int
    ts_base: int
    channels: tuple[int, int] | None = None  # TCP interleaved
    addr: tuple[tuple[str, int], tuple[str, int]] | None = None  # UDP (rtp, rtcp)
    seq_delta: int = 0
    packets: int = 0
    octets: int = 0
    last_ts: int = 0


class Session:
    """One RTSP session: its tracks, its feed (shared live one or its own VOD one)."""

    def __init__(self, server: OriginServer, conn: RtspConnection | None) -> None:
        self.server = server
        self.conn = conn
        self.id = secrets.token_hex(8)
        self.tracks: dict[int, TrackState] = {}
        self.feed: Feed | None = None
        self.playing = False
        self.last_seen = time.monotonic()
        self.layout: tuple[int, ...] = ()
        self.paused_at = 0.0
        self.has_udp = False

    def setup(self, track: int, spec: TransportSpec, peer_host: str) -> TransportSpec:
        st = TrackState(
            ssrc=random.getrandbits(32),
            seq_base=random.getrandbits(16),
            ts_base=random.getrandbits(32),
        )
        if spec.lower_transport == "TCP":
            ch = spec.interleaved or (2 * track, 2 * track + 1)
            st.channels = (ch[0], ch[1] if ch[1] != ch[0] else ch[0] + 1)
            reply = TransportSpec(
                protocol="RTP/AVP/TCP", unicast=True, interleaved=st.channels, ssrc=f"{st.ssrc:08X}"
            )
        else:
            assert spec.client_port is not None
            rtp, rtcp = spec.client_port
            if rtcp == rtp:
                rtcp = rtp + 1
            st.addr = ((peer_host, rtp), (peer_host, rtcp))
            self.has_udp = True
            reply = TransportSpec(
                protocol="RTP/AVP",
                unicast=True,
                client_port=(rtp, rtcp),
                server_port=self.server.udp_ports,
                ssrc=f"{st.ssrc:08X}",
            )
        self.tracks[track] = st
        n = len(self.server.rec.tracks)
        self.layout = tuple(
            self.tracks[i].channels[0] if i in self.tracks and self.tracks[i].channels else -1  # type: ignore[index]
            for i in range(n)
        )
        return reply

    def play(self, start: float | None, base_url: str) -> tuple[str, str]:
        """Start (or resume) delivery; returns (Range, RTP-Info) header values."""
        server = self.server
        self._unsubscribe()  # a second PLAY must not subscribe twice
        if self.feed is not None and self.feed is not server.live_feed:
            self.feed.stop()
        if server.vod:
            offset = start if start is not None else (self.paused_at if self.feed else 0.0)
            offset = min(max(offset, 0.0), server.rec.duration)
            feed = Feed(server.rec, server.loop, looping=False, start_offset=offset)
            rng = f"npt={offset:.3f}-{server.rec.duration:.3f}"
        else:
            feed = server.live_feed
            rng = "npt=now-"
        infos = []
        for i, st in sorted(self.tracks.items()):
            first = feed.next_fseq(i)
            st.seq_delta = st.seq_base - first
            rtptime = (feed.rel_ts_now(i) + st.ts_base) & M32
            url = f"{base_url.rstrip('/')}/trackID={i}"
            infos.append(RtpInfo(url, st.seq_base & 0xFFFF, rtptime))
            st.seq_base = (st.seq_base + 1000) & 0xFFFF  # a later PLAY starts elsewhere
        self.feed = feed
        feed.subscribers.append(self)
        self.playing = True
        if server.vod:
            feed.start()
        return rng, build_rtp_info(infos)

    def pause(self) -> None:
        if self.feed is not None:
            self.paused_at = self.feed.position()
            if self.feed is not self.server.live_feed:
                self.feed.stop()
        self._unsubscribe()
        self.playing = False

    def _unsubscribe(self) -> None:
        if self.feed is not None and self in self.feed.subscribers:
            self.feed.subscribers.remove(self)

    def close(self) -> None:
        self._unsubscribe()
        if self.feed is not None and self.feed is not self.server.live_feed:
            self.feed.stop()
        self.feed = None
        self.playing = False

    # -- data ---------------------------------------------------------------------------------

    def deliver(self, batch: Batch) -> None:
        """Send one batch: one write for interleaved tracks, one sendto per UDP packet."""
        tracks = self.tracks
        pack_into = _HDR.pack_into
        if self.conn is not None and any(c >= 0 for c in self.layout):
            transport = self.conn.transport
            if transport is None or transport.is_closing():
                return
            template, patches = batch.template(self.layout)
            if transport.get_write_buffer_size() > MAX_TCP_BACKLOG:
                Stats.dropped += len(patches)
                return
            buf = bytearray(template)
            for off, track, fseq, rel, size in patches:
                st = tracks[track]
                ts = (rel + st.ts_base) & M32
                pack_into(buf, off, (fseq + st.seq_delta) & 0xFFFF, ts, st.ssrc)
                st.packets += 1
                st.octets += size
                st.last_ts = ts
            transport.write(buf)
            Stats.packets += len(patches)
            Stats.bytes += len(buf)
        if not self.has_udp:
            return
        sendto = self.server.rtp_sock.sendto
        for track, rel, fseq, pkt in batch.items:
            st = tracks.get(track)
            if st is None or st.addr is None:
                continue
            buf = bytearray(pkt)
            ts = (rel + st.ts_base) & M32
            pack_into(buf, 2, (fseq + st.seq_delta) & 0xFFFF, ts, st.ssrc)
            try:
                sendto(buf, st.addr[0])
            except OSError:
                Stats.dropped += 1
                continue
            st.packets += 1
            st.octets += len(pkt) - 12
            st.last_ts = ts
            Stats.packets += 1
            Stats.bytes += len(buf)

    def send_rtcp(self, track: int, packet: bytes) -> None:
        st = self.tracks[track]
        if st.channels is not None and self.conn is not None and self.conn.transport is not None:
            if not self.conn.transport.is_closing():
                self.conn.transport.write(_FRAME.pack(0x24, st.channels[1], len(packet)) + packet)
        elif st.addr is not None:
            with contextlib.suppress(OSError):
                self.server.rtcp_sock.sendto(packet, st.addr[1])

    def _sr(self, track: int, st: TrackState) -> bytes:
        """An RTCP SR + SDES CNAME compound for ``track`` (RFC 3550 §6.1)."""
        assert self.feed is not None
        now = time.time()
        sec = (int(now) + _NTP_EPOCH) & M32
        frac = int((now % 1.0) * 2**32) & M32
        ts = (self.feed.rel_ts_now(track) + st.ts_base) & M32
        sr = _SR.pack(0x80, 200, 6, st.ssrc, sec, frac, ts, st.packets & M32, st.octets & M32)
        return sr + _sdes(st.ssrc)

    def sender_reports(self) -> None:
        if not self.playing or self.feed is None:
            return
        for i, st in self.tracks.items():
            self.send_rtcp(i, self._sr(i, st))

    def feed_ended(self, feed: Feed) -> None:
        """VOD end of clip: RTCP BYE on every track, as GStreamer does."""
        if feed is not self.feed:
            return
        # A compound SR+SDES+BYE: ffmpeg drops RTCP packets shorter than 12 bytes, so a bare
        # 8-byte BYE would never end its session.
        for i, st in self.tracks.items():
            self.send_rtcp(i, self._sr(i, st) + _BYE.pack(0x81, 203, 1, st.ssrc))
        self.playing = False
        self._unsubscribe()


class RtspConnection(asyncio.Protocol):
    """One client control connection."""

    def __init__(self, server: OriginServer) -> None:
        self.server = server
        self.reader = RtspReader()
        self.transport: asyncio.Transport | None = None
        self.peer_host = "127.0.0.1"
        self.sessions: list[Session] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.set_write_buffer_limits(high=MAX_TCP_BACKLOG)  # type: ignore[attr-defined]
        peer = transport.get_extra_info("peername")
        if peer:
            self.peer_host = peer[0]
        Stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        for sess in self.sessions:
            # Like GStreamer's server: a session ends with its control connection (a UDP
            # session could outlive it per RFC 2326, but a load test must not leak senders).
            self.server.drop(sess)

    def data_received(self, data: bytes) -> None:
        try:
            self.reader.receive_data(data)
            for ev in self.reader.events():
                if isinstance(ev, Request):
                    self._request(ev)
                elif isinstance(ev, InterleavedFrame):  # RTCP receiver reports keep us alive
                    for sess in self.sessions:
                        sess.last_seen = time.monotonic()
        except Exception as exc:  # malformed input: answer 400 and close
            if self.transport is not None:
                self.transport.write(build_response(make_response(400, None)))
                self.transport.close()
            print(f"replay-origin: closing a connection: {exc}", file=sys.stderr)

    def _reply(self, resp: Response) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(build_response(resp))

    def _request(self, req: Request) -> None:
        server = self.server
        cseq = req.cseq
        base = [("Server", "mediacache-replay-origin")]
        sid = (req.headers.get("Session") or "").split(";")[0].strip()
        sess = server.sessions.get(sid) if sid else None
        if sid and sess is None:
            self._reply(make_response(454, cseq, base))
            return
        if sess is not None:
            sess.last_seen = time.monotonic()
        session_hdr = [("Session", f"{sess.id};timeout={server.timeout}")] if sess else []
        method = req.method
        if method == "OPTIONS":
            self._reply(make_response(200, cseq, [*base, ("Public", PUBLIC), *session_hdr]))
        elif method == "DESCRIBE":
            url = req.uri
            content_base = url if url.endswith("/") else url + "/"
            body = server.sdp()
            headers = [*base, ("Content-Base", content_base), ("Content-Type", "application/sdp")]
            self._reply(make_response(200, cseq, headers, body))
        elif method == "SETUP":
            self._setup(req, sess, base)
        elif method in ("PLAY", "PAUSE", "TEARDOWN") and sess is None:
            self._reply(make_response(455 if not server.sessions else 454, cseq, base))
        elif method == "PLAY":
            assert sess is not None
            start = None
            if rng := req.headers.get("Range"):
                with contextlib.suppress(Exception):
                    start = parse_range(rng).start
            range_value, rtp_info = sess.play(start, req.uri)
            headers = [*base, *session_hdr, ("Range", range_value), ("RTP-Info", rtp_info)]
            self._reply(make_response(200, cseq, headers))
        elif method == "PAUSE":
            assert sess is not None
            sess.pause()
            self._reply(make_response(200, cseq, [*base, *session_hdr]))
        elif method == "TEARDOWN":
            assert sess is not None
            server.drop(sess)
            self._reply(make_response(200, cseq, base))
        elif method in ("GET_PARAMETER", "SET_PARAMETER"):
            self._reply(make_response(200, cseq, [*base, *session_hdr]))
        else:
            self._reply(make_response(501, cseq, [*base, ("Allow", PUBLIC)]))

    def _setup(self, req: Request, sess: Session | None, base: list[tuple[str, str]]) -> None:
        server = self.server
        m = _TRACK_RE.search(req.uri)
        track = int(m.group(1)) if m else -1
        if not 0 <= track < len(server.rec.tracks):
            self._reply(make_response(404, req.cseq, base))
            return
        try:
            specs = parse_transports(req.headers.get("Transport") or "")
        except Exception:
            specs = []
        spec = next(
            (
                s
                for s in specs
                if s.protocol.upper().startswith("RTP/AVP")
                and (s.lower_transport == "TCP" or s.client_port is not None)
            ),
            None,
        )
        if spec is None:
            self._reply(make_response(461, req.cseq, base))
            return
        if sess is None:
            sess = Session(server, self)
            server.sessions[sess.id] = sess
            Stats.sessions += 1
        if sess.conn is None:
            sess.conn = self
        if sess not in self.sessions:
            self.sessions.append(sess)
        reply = sess.setup(track, spec, self.peer_host)
        headers = [
            *base,
            ("Session", f"{sess.id};timeout={server.timeout}"),
            ("Transport", reply.build()),
        ]
        self._reply(make_response(200, req.cseq, headers))


class OriginServer:
    """The listener, the shared UDP pair, the live feed and the session table."""

    def __init__(self, rec: Recording, *, vod: bool, timeout: int) -> None:
        self.rec = rec
        self.vod = vod
        self.timeout = timeout
        self.sessions: dict[str, Session] = {}
        self.loop = asyncio.get_running_loop()
        self.rtp_sock, self.rtcp_sock = _udp_pair()
        self.udp_ports = (self.rtp_sock.getsockname()[1], self.rtcp_sock.getsockname()[1])
        for s in (self.rtp_sock, self.rtcp_sock):
            self.loop.add_reader(s.fileno(), _drain, s)
        self.live_feed = Feed(rec, self.loop, looping=True)
        if not vod:
            self.live_feed.start()
        self.server: asyncio.Server | None = None
        self._housekeeping = self.loop.call_later(SR_INTERVAL, self._tick)

    def sdp(self) -> bytes:
        lines = [ln for ln in self.rec.session_lines if not ln.startswith(("a=range", "a=control"))]
        lines.append("a=control:*")
        lines.append(
            "a=range:npt=now-" if not self.vod else f"a=range:npt=0-{self.rec.duration:.3f}"
        )
        for i, track in enumerate(self.rec.tracks):
            for ln in track.media_lines:
                if ln.startswith(("a=control", "a=ssrc", "a=range")):
                    continue
                lines.append(ln)
            lines.append(f"a=control:trackID={i}")
        return ("\r\n".join(lines) + "\r\n").encode()

    def drop(self, sess: Session) -> None:
        sess.close()
        self.sessions.pop(sess.id, None)

    def _tick(self) -> None:
        """Every SR_INTERVAL: sender reports, and sessions idle past their timeout go."""
        now = time.monotonic()
        for sess in list(self.sessions.values()):
            if now - sess.last_seen > self.timeout:
                self.drop(sess)
            else:
                sess.sender_reports()
        self._housekeeping = self.loop.call_later(SR_INTERVAL, self._tick)

    def close(self) -> None:
        self._housekeeping.cancel()
        self.live_feed.stop()
        for sess in list(self.sessions.values()):
            self.drop(sess)
        for s in (self.rtp_sock, self.rtcp_sock):
            self.loop.remove_reader(s.fileno())
            s.close()


def _sdes(ssrc: int) -> bytes:
    """An RTCP SDES packet with one CNAME item, padded to 32 bits."""
    cname = b"replay@mediacache"
    chunk = struct.pack(">IBB", ssrc, 1, len(cname)) + cname + b"\0"
    chunk += b"\0" * (-len(chunk) % 4)
    return struct.pack(">BBH", 0x81, 202, len(chunk) // 4) + chunk


def _drain(sock: socket.socket) -> None:
    """Read and drop what UDP clients send (receiver reports)."""
    for _ in range(64):
        try:
            sock.recv(2048)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            continue


def _udp_pair(host: str = "127.0.0.1") -> tuple[socket.socket, socket.socket]:
    """An even/odd bound UDP pair (non-blocking, large send buffer)."""
    for _ in range(200):
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        a.bind((host, 0))
        port = a.getsockname()[1]
        if port % 2 == 0 and port < 65535:
            b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                b.bind((host, port + 1))
            except OSError:
                b.close()
            else:
                for s in (a, b):
                    s.setblocking(False)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
                return a, b
        a.close()
    raise OSError("no free UDP port pair")


async def serve(args: argparse.Namespace, rec: Recording) -> None:
    loop = asyncio.get_running_loop()
    origin = OriginServer(rec, vod=args.vod, timeout=args.session_timeout)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server = await loop.create_server(
        lambda: RtspConnection(origin), args.host, args.port, reuse_address=True, backlog=4096
    )
    port = server.sockets[0].getsockname()[1]
    print(f"READY rtsp://{args.host}:{port}/", flush=True)
    try:
        if args.max_seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.max_seconds)
        else:
            await stop.wait()
    finally:
        server.close()
        origin.close()
        counters = {
            "connections": Stats.connections,
            "sessions": Stats.sessions,
            "packets": Stats.packets,
            "bytes": Stats.bytes,
            "dropped": Stats.dropped,
            "cpu_s": round(time.process_time(), 3),
        }
        print(json.dumps({"replay_origin": counters}), file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554, help="0 picks a free port (see READY)")
    p.add_argument("--vod", action="store_true", help="on demand: each PLAY plays the clip once")
    p.add_argument("--recording", type=Path, default=DEFAULT_RECORDING)
    p.add_argument("--record-only", action="store_true", help="record (if needed) and exit")
    p.add_argument("--rerecord", action="store_true", help="record again even if it exists")
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--session-timeout", type=int, default=60)
    p.add_argument("--max-seconds", type=float, default=0, help="stop after this long (0: never)")
    args = p.parse_args(argv)
    if args.rerecord:
        args.recording.unlink(missing_ok=True)
    path = ensure_recording(args.recording, args.clip_seconds)
    rec = Recording.load(path)
    if args.record_only:
        counts = [sum(1 for t, _ in rec.packets if t == i) for i in range(len(rec.tracks))]
        print(
            json.dumps(
                {
                    "recording": str(path),
                    "duration": round(rec.duration, 3),
                    "viewer_pkt_per_s": round(len(rec.packets) / rec.duration, 1),
                    "viewer_kbit_per_s": round(stream_rate(path)[1], 1),
                    "tracks": [
                        {"clock_rate": t.clock_rate, "packets": n, "m": t.media_lines[0]}
                        for t, n in zip(rec.tracks, counts, strict=True)
                    ],
                }
            )
        )
        return 0
    asyncio.run(serve(args, rec))
    return 0


if __name__ == "__main__":
    sys.exit(main())
