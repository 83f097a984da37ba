"""The reference Real origin: .rm files under a root, served over Real's RTSP dialect. Sans-I/O.

No open-source RealServer exists, so the proxy's tests need this one. It speaks the server side
of Real's RTSP the way ffmpeg, VLC's realrtsp and GStreamer's rtspreal exercise it (PEERS.md,
"RealMedia"). The core runs it (``mediacache origin realmedia --root DIR --listen HOST:PORT``):
one :class:`RealOriginLayer` per client connection, and what the connections share (session
count, credentials, clip cache, the live clock) in one :class:`OriginState` made by
:func:`reference_origin`. :class:`MediaLibrary` is the one place that touches files.

Theory of operation
-------------------
A connection holds at most one RTSP session. :data:`ALLOWED` is the whole transition table: the
methods each phase accepts (anything else known is 455, unknown methods 501)::

    INIT --SETUP--> READY --PLAY--> PLAYING --PAUSE--> READY --TEARDOWN--> INIT

The first SETUP must carry ``RealChallenge2`` computed from the ``RealChallenge1`` this
connection's OPTIONS replies announced (ffmpeg sends OPTIONS twice: both replies carry the same
challenge), and takes a session slot (``max_sessions``: the next one gets 453). Media flows only
once the session is both PLAYING and subscribed (``SET_PARAMETER Subscribe``): ffmpeg drops
interleaved data that arrives while it waits for a reply, and only subscribed ASM rules are
sent, which is what SureStream is (a client picks one rate's rule pair per stream). A stream
whose packets carry rules above 1 (version-1 packets, one pair per rate; the codec headers in an
``MLTI`` type-specific blob) is described with one rule pair per rate, each with the bit rate
measured from its packets (:func:`~mediacache_realmedia.sdp.multirate_rulebook`).

Data are RDT data packets built from the .rm packets (payload unchanged), paced in real time by
the packet timestamps. A :class:`RdtPlayout` per session is driven by the server's playout
scheduler (``StartPlayout``), and writes to the session's sinks: ``$``-framed on the control
connection, or datagrams from the format's shared UDP sockets. After the last packet of an
on-demand clip each stream gets a stream-end packet; the session stays until TEARDOWN, as with
a RealServer. A file under ``ROOT/live/`` is a live broadcast: ``a=range:npt=now-``, looped
forever on one clock shared by every viewer of the origin; a viewer joins "now", at the latest
video key frame (the packets up to now come as a burst, then real time), and each pass of the
loop moves the timestamps on by the clip's period, so time only goes forward.

Quirks the clients impose (PEERS.md item 7, checked with the peers in the tests)
--------------------------------------------------------------------------------
* Interleaved channel and RDT set id are the same number, and each stream's is its own: ffmpeg
  routes TCP data by set id within the ``interleaved`` range it was given, GStreamer by channel,
  VLC by bit 1 of byte 0 (``0x40``/``0x42``: two streams). A client that offers a channel gets
  it; one that does not (GStreamer, VLC) gets the stream's index. Over UDP the set id is the
  stream's index.
* VLC needs ``Server:`` to contain "Real" and the DESCRIBE reply to carry an ETag (its
  ``If-Match``); it stops reading at the first stream-end packet and never ends by itself.
* ffmpeg over TCP ends its input at the stream-end packet (its RDT header parser rejects it);
  over UDP it skips it and waits for more until its own timeout.
* ffmpeg reads the ASM rule in byte 3 as ``stream << 1 | not keyframe`` and expands rules 62
  and 63, so clips with rules above 61 are refused (415).
"""

from __future__ import annotations

import bisect
import enum
import hashlib
import itertools
import re
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from mediacache import origin as core_origin
from mediacache.errors import LocalProtocolError, RemoteProtocolError
from mediacache.formats import OriginOptions
from mediacache.logs import AccessRecord
from mediacache.rtsp import (
    NptRange,
    Request,
    Response,
    RtpInfo,
    RtspReader,
    TransportSpec,
    build_response,
    build_rtp_info,
    make_response,
    parse_range,
    parse_session,
    parse_transports,
)
from mediacache.sansio.commands import (
    CancelTimer,
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    SendData,
    SetTimer,
    StartPlayout,
    StopPlayout,
    UnwatchDatagrams,
    WatchDatagrams,
)
from mediacache.sansio.events import (
    ConnectionClosed,
    DatagramReceived,
    DataReceived,
    Event,
    Start,
    TimerFired,
)
from mediacache.sansio.layer import DataPlane, SessionContext, Sink
from mediacache_realmedia.auth import Credentials
from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.sdp import describe_rm, format_subscribe, multirate_rulebook
from mediacache_realmedia.sdp import parse_subscribe as _parse_subscribe
from mediacache_realmedia.wire.rdt import RdtData, build_rdt, build_stream_end
from mediacache_realmedia.wire.rmf import RmFile, parse_rm

__all__ = [
    "ALLOWED",
    "LIVE_DIR",
    "MEDIA_SUFFIXES",
    "SERVER",
    "MediaLibrary",
    "OriginState",
    "Phase",
    "RdtPlayout",
    "RealClip",
    "RealOriginLayer",
    "rdt_data_packet",
    "reference_origin",
]

MEDIA_SUFFIXES: Final = frozenset({".rm", ".rmvb"})
LIVE_DIR: Final = core_origin.LIVE_DIR
SERVER: Final = "RealServer Version 9.0.2.794 (mediacache reference origin)"
"""VLC's realrtsp gives up unless ``Server`` names "Real" or "Helix"."""
LEAD: Final = 0.01
"""Packets due within this many seconds go now: one pump sends a batch, not one packet."""
BACKOFF: Final = 0.05
"""How long playout waits while the client's TCP send buffer is over its high-water mark."""
BATCH: Final = 256
"""At most this many packets per pump (a live joiner's burst), so other sessions get the loop."""
MAX_RULE: Final = 61
"""ffmpeg expands ASM rules 62 and 63 (``rule >> 1 == 31``): rule books stay below."""

PUBLIC: Final = "OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, SET_PARAMETER, GET_PARAMETER, TEARDOWN"
IMPLEMENTED: Final = frozenset(PUBLIC.split(", "))


class Phase(enum.Enum):
    """Where the connection's RTSP session is."""

    INIT = "init"
    READY = "ready"
    PLAYING = "playing"
    CLOSED = "closed"


_ANY: Final = frozenset({"OPTIONS", "DESCRIBE", "GET_PARAMETER", "SET_PARAMETER"})
ALLOWED: Final[dict[Phase, frozenset[str]]] = {
    Phase.INIT: _ANY | {"SETUP"},
    Phase.READY: _ANY | {"SETUP", "PLAY", "PAUSE", "TEARDOWN"},
    Phase.PLAYING: _ANY | {"PLAY", "PAUSE", "TEARDOWN"},
    Phase.CLOSED: frozenset(),
}
"""The transition table: the methods each phase accepts (others that we implement get 455)."""


# --- clips --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClipStream:
    """One stream of a clip as the SDP describes it."""

    number: int
    """MDPR stream number: the SDP ``streamid`` and the Subscribe ``stream``."""
    index: int
    """Position among the clip's streams (the set id a UDP client gets)."""
    video: bool
    rules: int
    """How many ASM rules its rule book has (two per rate)."""


@dataclass(frozen=True, slots=True, eq=False)
class RealClip:
    """One .rm file as the origin serves it: description, packet table and timing.

    The packet table is parallel tuples (send time, timestamp, stream index, ASM rule,
    payload) in file order, which is the muxer's interleaving. A packet is sent at the largest
    timestamp of the file up to it, not at its own: ffmpeg writes every real_144 audio packet
    with timestamp 0, and sorting by timestamp would send all the audio first. The RDT header
    carries the packet's own timestamp. A version-1 packet's rule is its own; a version-0
    packet's is 0 for a key frame and 1 for the rest (the single pair of
    :func:`~mediacache_realmedia.sdp.rulebook_for`).
    """

    name: str
    rm: RmFile
    live: bool
    etag: str
    streams: tuple[ClipStream, ...]
    times: tuple[int, ...]
    """Send times (ms): non-decreasing."""
    stamps: tuple[int, ...]
    """Timestamps (ms) as the file has them: what the RDT header says."""
    stream_of: tuple[int, ...]
    rules: tuple[int, ...]
    payloads: tuple[bytes, ...]
    keys: tuple[int, ...]
    """Packets where a viewer can start: video key frames (every packet of a clip without)."""
    period_ms: int
    """One pass of the clip: the duration, or the last timestamp plus a packet interval."""
    rulebooks: dict[int, str]

    @classmethod
    def from_bytes(cls, name: str, data: bytes, *, live: bool = False) -> RealClip:
        """Parse a .rm file; RealProtocolError when it has nothing RDT can carry."""
        rm = parse_rm(data)
        physical = [mp for mp in rm.streams if not mp.is_logical]
        if not physical:
            raise RealProtocolError(f"{name}: no media stream")
        if len(physical) > 31:
            raise RealProtocolError(f"{name}: {len(physical)} streams (RDT set ids stop at 30)")
        index_of = {mp.stream_number: i for i, mp in enumerate(physical)}
        rows = []
        for pkt in rm.packets:
            i = index_of.get(pkt.stream)
            if i is None:
                continue
            rule = pkt.asm_rule if pkt.asm_rule is not None else (0 if pkt.keyframe else 1)
            if rule > MAX_RULE:
                raise RealProtocolError(f"{name}: ASM rule {rule} (ffmpeg misreads rules > 61)")
            rows.append((pkt.timestamp_ms, i, rule, pkt.payload, pkt.keyframe))
        if not rows:
            raise RealProtocolError(f"{name}: no data packets")
        times = tuple(itertools.accumulate((r[0] for r in rows), max))
        video = [mp.mime_type.startswith("video/") for mp in physical]
        keys = tuple(n for n, r in enumerate(rows) if not any(video) or (video[r[1]] and r[4]))
        span = times[-1] - times[0]
        step = span // (len(times) - 1) if len(times) > 1 else 1
        period = max(rm.props.duration_ms, times[-1] + max(step, 1))

        streams, books = [], {}
        for i, mp in enumerate(physical):
            top = max((r[2] for r in rows if r[1] == i), default=1)
            pairs = top // 2 + 1
            streams.append(ClipStream(mp.stream_number, i, video[i], 2 * pairs))
            if pairs > 1:  # SureStream: one rate per rule pair, measured from the packets
                octets = [0] * pairs
                for r in rows:
                    if r[1] == i:
                        octets[r[2] // 2] += len(r[3])
                seconds = max(span, 1) / 1000
                books[mp.stream_number] = multirate_rulebook(
                    [round(8 * o / seconds) for o in octets]
                )
        return cls(
            name=name,
            rm=rm,
            live=live,
            etag=hashlib.sha1(data).hexdigest()[:16],
            streams=tuple(streams),
            times=times,
            stamps=tuple(r[0] for r in rows),
            stream_of=tuple(r[1] for r in rows),
            rules=tuple(r[2] for r in rows),
            payloads=tuple(r[3] for r in rows),
            keys=keys or (0,),
            period_ms=period,
            rulebooks=books,
        )

    def __len__(self) -> int:
        return len(self.times)

    @property
    def duration(self) -> float:
        """Seconds, as the SDP range says."""
        return (self.rm.props.duration_ms or self.period_ms) / 1000

    def clock_ms(self, index: int) -> int:
        """When virtual packet ``index`` (pass ``index // n`` of a loop) is due, in clip ms."""
        loop, i = divmod(index, len(self.times))
        return loop * self.period_ms + self.times[i]

    def stream(self, number: int) -> ClipStream | None:
        for s in self.streams:
            if s.number == number:
                return s
        return None

    def sdp(self, url: str) -> str:
        return describe_rm(self.rm, url=url, live=self.live, rulebooks=self.rulebooks)

    def index_at(self, ms: float) -> int:
        """The last packet due at or before ``ms`` into the clip."""
        return max(0, bisect.bisect_right(self.times, ms) - 1)

    def key_at_or_before(self, index: int) -> int:
        """Where a viewer asking for ``index`` can decode from: the key frame before it."""
        k = bisect.bisect_right(self.keys, index) - 1
        return self.keys[k] if k >= 0 else 0


def _parse_clip(name: str, data: bytes, live: bool) -> RealClip:
    return RealClip.from_bytes(name, data, live=live)


class MediaLibrary(core_origin.MediaLibrary[RealClip]):
    """The RealMedia clips under ``root`` (:class:`mediacache.origin.MediaLibrary`).

    A path is already percent-decoded. :meth:`open` raises LookupError if there is no such
    clip, RealProtocolError if it is not .rm.
    """

    def __init__(self, root: Path | str) -> None:
        super().__init__(root, MEDIA_SUFFIXES, _parse_clip, kind="RealMedia")


# --- state shared by the connections of one origin ---------------------------------------------


@dataclass
class OriginState(core_origin.OriginState[MediaLibrary, Credentials]):
    """What every connection of one origin shares (:class:`mediacache.origin.OriginState`)."""

    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def make_library(cls, root: Path) -> MediaLibrary:
        return MediaLibrary(root)

    @classmethod
    def make_credentials(cls, user: str, password: str) -> Credentials:
        return Credentials(user, password)

    def new_session_id(self) -> str:
        return f"{next(self._ids)}-{secrets.token_hex(4)}"


def reference_origin(options: OriginOptions) -> Callable[[SessionContext], RealOriginLayer]:
    """The layer factory of one origin, shared state inside (``mediacache_reference_origin``)."""
    state = OriginState.from_options(options)

    def make_layer(ctx: SessionContext) -> RealOriginLayer:
        return RealOriginLayer(ctx, state)

    return make_layer


# --- RDT playout ---------------------------------------------------------------------------------

_DATA_HEADER = struct.Struct(">BHBIH")  # flags, seq, rule, timestamp, total reliable


def rdt_data_packet(set_id: int, seq: int, rule: int, timestamp: int, payload: bytes) -> bytes:
    """A data packet as PEERS.md item 6 has it: ``0x40 | set_id << 1``, seq, rule, ts, 0, payload.

    The struct twin of :func:`~mediacache_realmedia.wire.rdt.build_data_packet` (the tests
    check they agree): this runs once per packet sent.
    """
    timestamp &= 0xFFFFFFFF
    if set_id < 31 and rule < 63:
        return _DATA_HEADER.pack(0x40 | set_id << 1, seq, rule, timestamp, 0) + payload
    return build_rdt(RdtData(set_id, seq, rule, timestamp, payload))


@dataclass(slots=True, eq=False)
class Track:
    """One set-up stream of a session: where its packets go and what it has been sent."""

    stream: ClipStream
    sink: Sink
    set_id: int
    transport: str
    rules: set[int] = field(default_factory=set)
    """Subscribed ASM rules: only packets of these rules are sent."""
    seq: int = 0
    last_ts: int = 0


class RdtPlayout:
    """One session's paced send of a clip (the server's playout scheduler calls ``pump``).

    ``index`` is a virtual packet index: packet ``index % n`` of pass ``index // n`` of the
    clip, due at ``epoch + (pass * period + time) / 1000``; an on-demand clip has one pass.
    """

    def __init__(
        self,
        clip: RealClip,
        tracks: dict[int, Track],
        epoch: float,
        index: int,
        *,
        writable: Callable[[], bool] = lambda: True,
    ) -> None:
        self.clip = clip
        self.tracks = tracks
        self.epoch = epoch
        self.index = index
        self.writable = writable
        self.ended = False

    def pump(self, now: float) -> float | None:
        clip = self.clip
        n = len(clip)
        times, stamps, stream_of = clip.times, clip.stamps, clip.stream_of
        rules, payloads = clip.rules, clip.payloads
        tracks = self.tracks
        horizon = now + LEAD
        for _ in range(BATCH):
            if not clip.live and self.index >= n:
                self._end()
                return None
            if not self.writable():
                return now + BACKOFF
            loop, i = divmod(self.index, n)
            shift = loop * clip.period_ms
            due = self.epoch + (shift + times[i]) / 1000
            if due > horizon:
                return due - LEAD
            self.index += 1
            track = tracks.get(stream_of[i])
            if track is None or rules[i] not in track.rules:
                continue
            ts = shift + stamps[i]
            track.sink.send(rdt_data_packet(track.set_id, track.seq, rules[i], ts, payloads[i]))
            track.seq = (track.seq + 1) % 0xFF00
            track.last_ts = ts
        return now

    def _end(self) -> None:
        """A stream-end packet per stream (VLC stops on it; ffmpeg waits for TEARDOWN)."""
        self.ended = True
        for track in self.tracks.values():
            track.sink.send(build_stream_end(track.set_id, track.seq, track.last_ts))


# --- the layer ------------------------------------------------------------------------------------


def request_path(uri: str) -> str:
    """The decoded path of a request URI: ``rtsp://h:p/a.rm``, ``/a.rm`` or VLC's ``h:p/a.rm``."""
    if "://" in uri:
        rest = uri.split("://", 1)[1]
        slash = rest.find("/")
        path = rest[slash:] if slash >= 0 else "/"
    elif uri.startswith("/"):
        path = uri
    else:
        slash = uri.find("/")
        path = uri[slash:] if slash >= 0 else "/"
    return unquote(path.split("?", 1)[0])


@dataclass(frozen=True, slots=True)
class _Transport:
    """What SETUP answers for one stream and how its packets will travel."""

    reply: TransportSpec
    make_sink: Callable[[], Sink]
    set_id: int
    kind: str
    watch: tuple[str, int] | None = None
    """The client's UDP address, whose datagrams are a sign of life."""


_STREAM_RE = re.compile(r"(.*?)/+streamid=([0-9]{1,5})/*")
_STREAM_URI_RE = re.compile(r"/+streamid=[0-9]+/*$")


class RealOriginLayer:
    """One client connection of the reference Real origin (see the module docstring)."""

    def __init__(self, ctx: SessionContext, state: OriginState) -> None:
        self.ctx = ctx
        self.state = state
        self.phase = Phase.INIT
        self.reader = RtspReader(max_body=64 * 1024)
        self.challenge = secrets.token_hex(16)
        """This connection's RealChallenge1 (32 characters: clients take up to 56)."""
        self.session_id = ""
        self.clip: RealClip | None = None
        self.base = ""
        self.tracks: dict[int, Track] = {}
        self.playout: RdtPlayout | None = None
        self.resume_index = 0
        self.play_pending = False
        self.watched: set[tuple[str, int]] = set()
        self.user_agent = ""
        self.url = ""
        self.status = 200
        self._holds_slot = False
        self._start = 0.0
        self._last_heard = 0.0
        self._timeout = float(getattr(ctx.settings, "session_timeout", 60.0))

    # -- events in --------------------------------------------------------------------------

    def abort(self, reason: str) -> list[Command]:
        """A bug of ours raised (the driver logged it): free the session slot, record the
        session as a 500 and drop the connection."""
        return self._close(reason, 500, abort=True)

    def handle(self, event: Event) -> list[Command]:
        if isinstance(event, DataReceived):
            if event.conn is not self.ctx.client or self.phase is Phase.CLOSED:
                return []
            return self._data(event.data)
        if isinstance(event, DatagramReceived):
            self._last_heard = self.ctx.monotonic()  # RDT acks or reports: the client is there
            return []
        if isinstance(event, TimerFired):
            return self._idle() if event.name == "idle" and self.phase is not Phase.CLOSED else []
        if isinstance(event, ConnectionClosed):
            if event.conn is not self.ctx.client or self.phase is Phase.CLOSED:
                return []
            self.phase = Phase.CLOSED
            return [*self._stop_playout(), *self._end_session(event.error or "client closed")]
        if isinstance(event, Start):
            self._last_heard = self.ctx.monotonic()
            self._start = self.ctx.clock()
            return [SetTimer("idle", self._timeout / 2)]
        return []

    def _data(self, data: bytes) -> list[Command]:
        out: list[Command] = []
        try:
            self.reader.receive_data(data)
            while self.phase is not Phase.CLOSED:
                message = self.reader.next_event()
                if message is None:
                    break
                self._last_heard = self.ctx.monotonic()
                if isinstance(message, Request):
                    out += self._request(message)
                # interleaved RDT from the client (acks, reports) and responses: nothing to do
        except RemoteProtocolError as exc:
            status = exc.status_hint if exc.status_hint in (400, 413, 414, 505) else 400
            out.append(Log("WARNING", f"realmedia origin: {self.ctx.client}: {exc}"))
            out.append(self._send(make_response(status, None, self._common())))
            out += self._close(f"protocol error: {exc}", status, drain=True)
        return out

    # -- requests ---------------------------------------------------------------------------

    def _request(self, req: Request) -> list[Command]:
        cseq = req.cseq
        if cseq is None:
            log = Log("WARNING", f"realmedia origin: {self.ctx.client}: {req.method} without CSeq")
            reply = self._send(make_response(400, None, self._common()))
            return [log, reply, *self._close("request without CSeq", 400, drain=True)]
        self.user_agent = req.headers.get("User-Agent", self.user_agent) or ""
        method = req.method  # case-sensitive (RFC 2326 §6.1)
        if method not in IMPLEMENTED:
            return [self._reply(req, 501, [("Public", PUBLIC)])]
        creds = self.state.credentials
        if (
            creds is not None
            and method != "OPTIONS"
            and not creds.check(method, req.headers.get("Authorization"))
        ):
            log = []
            if "Authorization" in req.headers:
                log = [Log("WARNING", f"realmedia origin: {self.ctx.client}: bad credentials")]
            challenges = [("WWW-Authenticate", c) for c in creds.challenges()]
            return [*log, self._reply(req, 401, challenges)]
        unsupported = [
            o.strip()
            for value in req.headers.get_all("Require")
            for o in value.split(",")
            if o.strip() and not o.strip().lower().startswith("com.real.")
        ]
        if unsupported:
            return [self._reply(req, 551, [("Unsupported", ", ".join(unsupported))])]
        session = req.headers.get("Session")
        if session is not None:
            try:
                sid = parse_session(session).id
            except RemoteProtocolError:
                return [self._reply(req, 454)]
            if not self.session_id or sid != self.session_id:
                return [self._reply(req, 454)]
        if method not in ALLOWED[self.phase]:
            allowed = sorted(ALLOWED[self.phase])
            return [self._reply(req, 455, [("Allow", ", ".join(allowed))])]
        handler = getattr(self, f"_on_{method.lower()}")
        result: list[Command] = handler(req)
        return result

    def _on_options(self, req: Request) -> list[Command]:
        return [self._reply(req, 200, [("Public", PUBLIC), ("RealChallenge1", self.challenge)])]

    def _open(self, req: Request, path: str) -> RealClip | Response:
        """The clip at ``path``, or the error reply (404, 415)."""
        try:
            return self.state.library.open(path)
        except LookupError:
            return self._response(req, 404)
        except RealProtocolError:
            return self._response(req, 415)

    def _absolute(self, uri: str) -> str:
        """``uri`` as an absolute rtsp URL (VLC sends ``host:port/path``, some just a path)."""
        if "://" in uri:
            return uri
        if uri.startswith("/"):
            host = self.ctx.client.local[0] if self.ctx.client.local else "127.0.0.1"
            host = f"[{host}]" if ":" in host else host
            return f"rtsp://{host}:{self.ctx.listen_port}{uri}"
        return "rtsp://" + uri

    def _on_describe(self, req: Request) -> list[Command]:
        self.url = req.uri
        clip = self._open(req, request_path(req.uri))
        if isinstance(clip, Response):
            return [self._send(clip)]
        url = self._absolute(req.uri.split("?", 1)[0]).rstrip("/")
        try:
            body = clip.sdp(url).encode("utf-8", "surrogateescape")
        except LocalProtocolError:
            return [self._reply(req, 400)]
        headers = [
            ("Content-Base", url + "/"),
            ("Content-Type", "application/sdp"),
            ("ETag", clip.etag),
            ("Vary", "Bandwidth, ClientID"),
        ]
        return [self._reply(req, 200, headers, body)]

    # SETUP ------------------------------------------------------------------------------------

    def _on_setup(self, req: Request) -> list[Command]:
        path = request_path(req.uri)
        match = _STREAM_RE.fullmatch(path)
        if match is None:
            return [self._reply(req, 459)]  # Real clients set streams up one by one
        clip = self._open(req, match.group(1))
        if isinstance(clip, Response):
            return [self._send(clip)]
        if self.clip is not None and clip is not self.clip:
            return [self._reply(req, 455)]
        stream = clip.stream(int(match.group(2)))
        if stream is None:
            return [self._reply(req, 404)]
        try:
            offered = parse_transports(req.headers.get("Transport", ""))
        except RemoteProtocolError as exc:
            return [self._reply(req, exc.status_hint if exc.status_hint == 461 else 400)]
        chosen = self._choose_transport(offered, stream)
        if chosen is None:
            return [self._reply(req, 461)]
        out: list[Command] = []
        new_session = not self.session_id
        if new_session:
            problem = self._check_challenge(req.headers.get("RealChallenge2"))
            if problem:
                log = Log("WARNING", f"realmedia origin: {self.ctx.client}: {problem}")
                return [log, self._reply(req, 400, [("X-Mediacache-Error", problem)])]
            if not self.state.acquire():
                log = Log(
                    "WARNING",
                    f"realmedia origin: refused {self.ctx.client}: "
                    f"{self.state.max_sessions} sessions in use",
                )
                return [log, self._reply(req, 453)]
            self._holds_slot = True
            self.session_id = self.state.new_session_id()
            self.clip = clip
            self.base = self._absolute(_STREAM_URI_RE.sub("", req.uri.split("?", 1)[0]))
            self.url = self.base
            self._start = self.ctx.clock()
            self.status = 200
            self.resume_index = 0
            live = " (live)" if clip.live else ""
            out.append(
                Log(
                    "INFO",
                    f"realmedia origin: {self.ctx.client} session {self.session_id} "
                    f"for {clip.name}{live}",
                )
            )
        old = self.tracks.get(stream.index)
        rules = old.rules if old is not None else set()
        sink = chosen.make_sink()
        self.tracks[stream.index] = Track(stream, sink, chosen.set_id, chosen.kind, rules)
        if chosen.watch is not None and chosen.watch not in self.watched:
            self.watched.add(chosen.watch)
            out.append(WatchDatagrams(chosen.watch))
        if self.phase is Phase.INIT:
            self.phase = Phase.READY
        out.append(self._reply(req, 200, [("Transport", chosen.reply.build())]))
        return out

    def _check_challenge(self, value: str | None) -> str | None:
        """Why the first SETUP's ``RealChallenge2`` is not the answer to ours (None: it is)."""
        if not value:
            return "SETUP without RealChallenge2"
        response, _, rest = value.partition(",")
        sd = rest.strip()
        if sd.lower().startswith("sd="):
            sd = sd[3:].strip()
        want, want_sd = real_challenge_response(self.challenge)
        if response.strip().lower() != want or (sd and sd.lower() != want_sd):
            return "wrong RealChallenge2"
        return None

    def _choose_transport(
        self, offered: list[TransportSpec], stream: ClipStream
    ) -> _Transport | None:
        """The first RDT transport of the client's list that we can serve."""
        dp: DataPlane = self.ctx.dataplane
        client = self.ctx.client
        for spec in offered:
            profile = spec.protocol.split("/", 1)[0].lower()
            if profile not in ("x-pn-tng", "x-real-rdt"):
                continue
            if spec.lower_transport == "TCP":
                if spec.interleaved is not None:
                    channel = spec.interleaved[0]
                else:
                    channel = self._free_channel(stream.index)
                if channel >= 31:  # the set id has five bits (31 means "expanded")
                    continue
                return _Transport(
                    TransportSpec(spec.protocol, interleaved=(channel, channel)),
                    lambda ch=channel: dp.interleaved_sink(client, ch),  # type: ignore[misc]
                    set_id=channel,
                    kind="RDT/TCP",
                )
            if spec.client_port is None:
                continue
            try:
                server_port = dp.server_ports[0]
            except RuntimeError:  # the origin has no UDP ports: UDP is refused
                continue
            addr = (client.peer[0], spec.client_port[0])
            reply = TransportSpec(
                spec.protocol, client_port=spec.client_port, server_port=(server_port, server_port)
            )
            return _Transport(
                reply,
                lambda a=addr: dp.udp_sink(a, rtcp=False),  # type: ignore[misc]
                set_id=stream.index,
                kind="RDT/UDP",
                watch=addr,
            )
        return None

    def _free_channel(self, want: int) -> int:
        """``want`` (the stream's index) unless another stream of the session has it."""
        used = {t.set_id for i, t in self.tracks.items() if t.transport == "RDT/TCP" and i != want}
        channel = want
        while channel in used:
            channel += 1
        return channel

    # SET_PARAMETER / GET_PARAMETER ------------------------------------------------------------

    def _on_set_parameter(self, req: Request) -> list[Command]:
        subscribe = req.headers.get("Subscribe")
        unsubscribe = req.headers.get("Unsubscribe")
        if subscribe is None and unsubscribe is None:
            return [self._reply(req, 200)]  # a keep-alive, or parameters we do not keep
        if self.phase is Phase.INIT or self.clip is None:
            return [self._reply(req, 455)]
        changes: list[tuple[bool, dict[int, frozenset[int]]]] = []
        try:
            for value, add in ((unsubscribe, False), (subscribe, True)):
                if value is not None:
                    changes.append((add, _parse_subscribe(value)))
        except RealProtocolError as exc:
            return [self._reply(req, 400, [("X-Mediacache-Error", str(exc)[:200])])]
        by_number = {t.stream.number: t for t in self.tracks.values()}
        for _, entries in changes:
            for number, rules in entries.items():
                track = by_number.get(number)
                if track is None or max(rules) >= track.stream.rules:
                    return [self._reply(req, 451, [("Unsupported", f"stream={number}")])]
        for add, entries in changes:
            for number, rules in entries.items():
                track = by_number[number]
                if add:
                    track.rules |= rules
                else:
                    track.rules -= rules
        out = [self._reply(req, 200)]
        if self.play_pending and self._subscribed():
            out += self._start_playout()
        return out

    def _on_get_parameter(self, req: Request) -> list[Command]:
        return [self._reply(req, 200)]

    def _subscribed(self) -> bool:
        return any(t.rules for t in self.tracks.values())

    # PLAY / PAUSE / TEARDOWN --------------------------------------------------------------------

    def _on_play(self, req: Request) -> list[Command]:
        clip = self.clip
        assert clip is not None
        rng: NptRange | None = None
        if "Range" in req.headers:
            try:
                rng = parse_range(req.headers["Range"])
            except RemoteProtocolError:
                return [self._reply(req, 457)]
        out = self._stop_playout()
        if clip.live:
            start_index = self._live_index()
            reply_range = "npt=now-"
        else:
            if rng is not None and rng.start is not None:
                if rng.start > clip.duration:
                    return [*out, self._reply(req, 457)]
                start_index = clip.key_at_or_before(
                    bisect.bisect_left(clip.times, rng.start * 1000)
                )
            else:
                start_index = min(self.resume_index, len(clip))
            start = clip.times[start_index] / 1000 if start_index < len(clip) else clip.duration
            reply_range = f"npt={start:.3f}-{clip.duration:.3f}"
        self.resume_index = start_index
        self.phase = Phase.PLAYING
        self.play_pending = True
        ts = clip.clock_ms(start_index if clip.live else min(start_index, len(clip) - 1))
        headers = [("Range", reply_range)]
        rtp_info = self._rtp_info(ts)
        if rtp_info:
            headers.append(("RTP-Info", rtp_info))
        out.append(self._reply(req, 200, headers))
        if self._subscribed():
            out += self._start_playout()
        return out

    def _rtp_info(self, ts: int) -> str:
        infos = [
            RtpInfo(f"{self.base}/streamid={t.stream.number}", t.seq, ts & 0xFFFFFFFF)
            for _, t in sorted(self.tracks.items())
        ]
        try:
            return build_rtp_info(infos)
        except LocalProtocolError:  # a URL RTP-Info cannot carry: leave the header out
            return ""

    def _live_index(self) -> int:
        """Virtual index of the packet a live viewer joining now starts at (a key frame)."""
        clip = self.clip
        assert clip is not None
        now = self.ctx.monotonic()
        epoch = self.state.live_clock(now)
        loop, within = divmod((now - epoch) * 1000, clip.period_ms)
        return int(loop) * len(clip) + clip.key_at_or_before(clip.index_at(within))

    def _start_playout(self) -> list[Command]:
        """Media flows from here: the session is playing and subscribed."""
        clip = self.clip
        assert clip is not None
        self.play_pending = False
        now = self.ctx.monotonic()
        index = self._live_index() if clip.live else self.resume_index
        if clip.live:
            epoch = self.state.live_clock(now)
        else:
            epoch = now - (clip.times[index] / 1000 if index < len(clip) else 0.0)
        dp, conn = self.ctx.dataplane, self.ctx.client
        tcp = any(t.transport == "RDT/TCP" for t in self.tracks.values())
        writable = (lambda: dp.client_writable(conn)) if tcp else (lambda: True)
        self.playout = RdtPlayout(clip, self.tracks, epoch, index, writable=writable)
        return [StartPlayout(self.playout)]

    def _stop_playout(self) -> list[Command]:
        self.play_pending = False
        playout, self.playout = self.playout, None
        if playout is None:
            return []
        if self.clip is not None and not self.clip.live:
            self.resume_index = min(playout.index, len(self.clip))
        return [StopPlayout(playout)]

    def _on_pause(self, req: Request) -> list[Command]:
        out = self._stop_playout()
        self.phase = Phase.READY
        return [*out, self._reply(req, 200)]

    def _on_teardown(self, req: Request) -> list[Command]:
        out = self._stop_playout()
        reply = self._reply(req, 200)  # still carries the Session
        out += [reply, *self._end_session("teardown")]
        self.phase = Phase.INIT
        return out

    # -- replies ------------------------------------------------------------------------------

    def _common(self) -> list[tuple[str, str]]:
        return [("Server", SERVER)]

    def _response(
        self,
        req: Request,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> Response:
        pairs = self._common()
        if self.session_id and status != 454:
            pairs.append(("Session", f"{self.session_id};timeout={int(self._timeout)}"))
        pairs += headers or []
        if status >= 400:
            self.status = status
        return make_response(status, req.cseq, pairs, body)

    def _reply(
        self,
        req: Request,
        status: int,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> SendData:
        return self._send(self._response(req, status, headers, body))

    def _send(self, response: Response) -> SendData:
        return SendData(self.ctx.client, build_response(response))

    # -- the end ------------------------------------------------------------------------------

    def _idle(self) -> list[Command]:
        """Drop a client silent for ``session_timeout`` (one streaming over TCP is reading)."""
        now = self.ctx.monotonic()
        tcp = any(t.transport == "RDT/TCP" for t in self.tracks.values())
        if self.playout is not None and not self.playout.ended and tcp:
            self._last_heard = now
        silent = now - self._last_heard
        if silent >= self._timeout:
            return self._close(f"silent for {silent:.0f} s", 408)
        return [SetTimer("idle", self._timeout / 2)]

    def _close(
        self, reason: str, status: int, *, drain: bool = False, abort: bool = False
    ) -> list[Command]:
        if self.phase is Phase.CLOSED:
            return []
        self.phase = Phase.CLOSED
        self.status = status
        return [
            *self._stop_playout(),
            CancelTimer("idle"),
            CloseConnection(self.ctx.client, abort=abort, drain=drain),
            *self._end_session(reason),
        ]

    def _end_session(self, reason: str) -> list[Command]:
        """Give the slot back and write the session's one access record (if it had a session)."""
        out: list[Command] = [UnwatchDatagrams(addr) for addr in sorted(self.watched)]
        self.watched.clear()
        if self._holds_slot:
            self._holds_slot = False
            self.state.release()
        if not self.session_id:
            return out
        subscription = {
            t.stream.number: frozenset(t.rules) for t in self.tracks.values() if t.rules
        }
        record = AccessRecord(
            start=self._start or self.ctx.clock(),
            end=self.ctx.clock(),
            client=self.ctx.client.peer[0],
            format=self.ctx.format_name,
            url=self.url,
            status=self.status,
            variant=format_subscribe(subscription) if subscription else "",
            transport=",".join(sorted({t.transport for t in self.tracks.values()})),
            bytes_to_client=sum(t.sink.bytes_sent for t in self.tracks.values()),
            session=self.session_id,
            reason=reason,
            user_agent=self.user_agent,
        )
        self.session_id = ""
        self.clip = None
        self.tracks = {}
        self.resume_index = 0
        return [*out, EmitRecord(record)]
