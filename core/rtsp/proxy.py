"""The RTSP proxy layer: one client control connection, relayed to one origin (or parent).

Theory of operation
-------------------
The client talks RTSP to us; we talk RTSP to the origin on a TCP connection of our own and ask
for every track as RTP interleaved on that connection, so the proxy never holds lossy data
(DESIGN.md: "proxy to origin is always TCP"). Toward the client each track goes out over UDP
from the format's shared server ports, or interleaved on the client's connection, whichever the
client asked for.

Requests are handled one at a time: a client request is forwarded with our own CSeq (the proxy
also sends requests of its own, keep-alives, so the two CSeq spaces are mapped), and the next
client request waits until the origin answered. The client sees a session id of ours, not the
origin's: later the same client session may be served from the cache or a split feed, and the
origin session behind it is then only the accounting session.

URLs: in forward mode the client names the origin, and URLs pass unchanged. In reverse mode a
route maps ``rtsp://PROXY/prefix/...`` to ``ORIGIN/...``: request URLs are mapped to the origin,
and every URL the origin sends back (Content-Base, Content-Location, RTP-Info, SDP a=control)
is mapped back, so unmodified clients keep talking to the proxy.

Format dialects (Real, Windows Media over RTSP) subclass :class:`RtspDialect` to change the
transports and headers; the state machine stays here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mediacache.access import ClientAuthenticator, CredentialCheck
from mediacache.cache.objects import CacheError, CacheKey, TrackMeta
from mediacache.cache.playout import available
from mediacache.cache.store import Fill
from mediacache.config import split_host_port
from mediacache.errors import ProtocolError
from mediacache.logs import AccessRecord
from mediacache.rtp import rtcp_has_bye, rtp_timestamp
from mediacache.rtsp.caching import (
    FillRecorder,
    RecordedTrack,
    Recorder,
    clock_rate_of,
    duration_of,
    forbids_caching,
    is_on_demand,
    relative_control,
    still_valid,
    track_metas,
    validators_of,
    variant_key,
)
from mediacache.rtsp.headers import (
    RtpInfo,
    TransportSpec,
    parse_basic_credentials,
    parse_range,
    parse_rtp_info,
    parse_session,
    parse_transports,
)
from mediacache.rtsp.interleaved import build_interleaved
from mediacache.rtsp.message import (
    REASONS,
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    build_request,
    build_response,
)
from mediacache.rtsp.replay import Replay, ReplayTrack, RtpReplay
from mediacache.rtsp.sdp import SessionDescription, build_sdp, parse_sdp, rewrite_controls
from mediacache.rtsp.url import RtspUrl, parse_url, rebase_url, resolve_url
from mediacache.sansio.commands import (
    CancelTimer,
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    OpenConnection,
    SendData,
    SetTimer,
    StartPlayout,
    StopPlayout,
    UnwatchDatagrams,
    WatchDatagrams,
)
from mediacache.sansio.connection import Connection
from mediacache.sansio.events import (
    ConnectionClosed,
    DatagramReceived,
    DataReceived,
    Event,
    Notify,
    OpenCompleted,
    Start,
    TimerFired,
)
from mediacache.sansio.layer import SessionContext, Sink
from mediacache.splitter import (
    FEED_HANDED_OVER,
    FEED_HANDOVER,
    FEED_START,
    Continuity,
    FeedTrack,
    LiveFeed,
)

VIA = "RTSP/1.0 mediacache"
SUPPORTED_METHODS = (
    "OPTIONS",
    "DESCRIBE",
    "SETUP",
    "PLAY",
    "PAUSE",
    "TEARDOWN",
    "GET_PARAMETER",
    "SET_PARAMETER",
)
SESSION_METHODS = frozenset({"PLAY", "PAUSE", "TEARDOWN"})
MAX_QUEUED_REQUESTS = 16
ORIGIN_CONTINUE = "origin-continue"
"""Posted to ourselves to go on reading the origin's bytes after a relayed response."""
FILL_IDLE_LIMIT = 15.0
"""A fill whose origin sends nothing for this long (while not paused) is aborted."""
FEED_WAIT_GRACE = 5.0
"""A viewer waits for another's starting feed at most this beyond ``origin_response_timeout``
(the bound of the owner's PLAY itself: its failure wakes the waiters before)."""

# Headers that describe one hop, rebuilt by us on each side rather than copied.
_HOP_REQUEST = ("CSeq", "Session", "Content-Length", "Transport", "Connection", "Proxy-Require")
_HOP_RESPONSE = ("CSeq", "Session", "Content-Length", "Transport", "Connection")


class RtspDialect:
    """The parts of RTSP that differ per format. QuickTime uses this class as it is."""

    origin_tcp_protocol = "RTP/AVP/TCP"
    client_udp_protocol = "RTP/AVP"
    client_tcp_protocol = "RTP/AVP/TCP"
    cache_authenticated = True
    """May content the origin served only after authentication be cached? (Every later
    client still has to pass the origin's authentication on its accounting connection.)"""
    can_cache = True
    """False for dialects whose data the cache cannot replay yet (it replays RTP)."""
    can_split = True
    """False for dialects whose live data the splitter cannot hand to joiners yet."""

    def client_transport_usable(self, spec: TransportSpec) -> bool:
        """Can we serve a client that offers ``spec``? (unicast RTP over UDP or interleaved)."""
        if spec.unicast is False or spec.destination:
            return False
        proto = spec.protocol.upper()
        if not proto.startswith("RTP/AVP"):
            return False
        if spec.lower_transport == "UDP":
            return spec.client_port is not None
        return True

    def origin_transport(
        self, track_index: int, client: TransportSpec | None = None
    ) -> TransportSpec:
        """What we ask the origin for: always TCP, interleaved on our control connection.
        ``client`` is what the client asked for (a dialect may mirror its channels)."""
        return TransportSpec(
            protocol=self.origin_tcp_protocol,
            unicast=True,
            interleaved=(2 * track_index, 2 * track_index + 1),
        )

    rtp_info = True
    """Do our PLAY replies to split viewers carry RTP-Info (the feed's RTP seq/timestamp)?"""

    def feed_continuity(
        self, track: FeedTrack, route: Callable[[Sink, Sink], None]
    ) -> tuple[Sink, Sink] | None:
        """Called at a feed take-over, once per track, for the successor's origin channels:
        the (data, control) sinks that join its stream to what ``track``'s viewers had (they
        feed ``track``'s fan-outs; ``route(track.rtp, track.rtcp)`` puts the fan-outs straight
        on the channels once nothing needs changing). None: the core's RTP
        :class:`~mediacache.splitter.Continuity` (``rtp_info`` dialects) or the fan-outs as
        they are."""
        return None

    def ends_stream(self, payload: bytes) -> bool:
        """Does this frame of a track's end-of-stream channel end the track (RTCP BYE)?"""
        return rtcp_has_bye(payload)

    def client_sink(
        self, sink: Sink, req: Request, origin_channel: int, client_channel: int | None
    ) -> Sink:
        """The sink a set-up track's data go to (a dialect may rewrite each packet for this
        viewer); ``client_channel`` is None for UDP."""
        return sink

    def client_authenticator(self, settings: Any) -> ClientAuthenticator | None:
        """Authentication of players at the proxy for this format (None: none)."""
        return None

    # -- requests and responses that a dialect adjusts on their way through ------------------

    def client_channels(self, track_index: int, req: Request, used: set[int]) -> tuple[int, int]:
        """Interleaved channels for a TCP client that named none (or taken ones)."""
        base = 2 * track_index
        while base in used or base + 1 in used:
            base += 2
        return base, base + 1

    def request_uri(self, uri: str) -> str:
        """The client's Request-URI as the proxy reads it (a dialect may repair its players')."""
        return uri

    def options_headers(self) -> list[tuple[str, str]]:
        """Extra headers of an OPTIONS reply the proxy gives itself (no origin asked)."""
        return []

    def origin_greeting(self) -> Headers | None:
        """Headers of an OPTIONS sent first on every new origin connection (None: none)."""
        return None

    def origin_greeted(self, headers: Headers) -> None:
        """The origin's answer to :meth:`origin_greeting`."""

    def refuse(self, req: Request) -> tuple[int, str] | None:
        """(status, reason) when the client's ``req`` must be answered here with an error."""
        return None

    def request_to_origin(self, req: Request, headers: Headers) -> Headers:
        """The headers of the client's ``req`` as they go to the origin (hop headers gone)."""
        return headers

    def response_to_client(self, req: Request, headers: Headers) -> Headers:
        """The headers of the origin's answer to ``req`` as they go to the client."""
        return headers

    # -- caching ------------------------------------------------------------------------------

    def variant(self, relative_controls: list[str]) -> str | None:
        """The cache variant of this session; None while it is not known yet (Real: before
        the client's Subscribe). Then the first PLAY is answered here and the decision waits."""
        return variant_key(relative_controls)

    def make_recorder(self, fill: Fill, tracks: list[Track], now: float) -> Recorder:
        """The recorder of a MISS session whose tracks are ``tracks`` (fill track i = tracks[i])."""
        rtp_tracks: dict[int, RecordedTrack] = {}
        rtcp_tracks: dict[int, RecordedTrack] = {}
        for i, track in enumerate(tracks):
            rec = RecordedTrack(meta_index=i)
            rtp_tracks[track.origin_channels[0]] = rec
            rtcp_tracks[track.origin_channels[1]] = rec
        return FillRecorder(fill, now, rtp_tracks=rtp_tracks, rtcp_tracks=rtcp_tracks)

    def continue_numbering(
        self, old: Replay, new: Replay, old_sink: Sink, new_sink: Sink
    ) -> None:
        """A variant switch replaced ``old`` by ``new`` on the same sink: let the viewer's
        packet numbering go on (RTP replays restamp per PLAY anyway)."""

    def make_replay(
        self, source: Any, pairs: list[tuple[Track, TrackMeta]], wallclock: Any
    ) -> Replay:
        """A HIT viewer's replay of ``source``; ``pairs`` puts each set-up track beside its
        stored track (ordered by the stored track id)."""
        replay_tracks = []
        for track, tmeta in pairs:
            rtptime = tmeta.extra.get("rtptime")
            ssrc = track.client_transport.ssrc
            replay_tracks.append(
                ReplayTrack(
                    rtp_sink=track.rtp_sink,
                    rtcp_sink=track.rtcp_sink,
                    clock_rate=tmeta.clock_rate or 90000,
                    codec=tmeta.codec,
                    origin_rtptime=(
                        int(rtptime) if rtptime else _first_ts(source, tmeta.track_id)
                    ),
                    origin_npt=float(tmeta.extra.get("npt", "0")),
                    **({"ssrc": int(ssrc, 16)} if ssrc and _is_hex(ssrc) else {}),
                )
            )
        return RtpReplay(source, replay_tracks, wallclock=wallclock)


@dataclass
class Track:
    """One set-up track: where its packets come from (origin channels) and go (sinks)."""

    url: str
    origin_channels: tuple[int, int]
    client_transport: TransportSpec
    rtp_sink: Sink
    rtcp_sink: Sink
    client_channels: tuple[int, int] | None = None
    watched: tuple[tuple[str, int], ...] = ()


@dataclass
class _Pending:
    """A request we sent to the origin, waiting for its response."""

    request: Request | None  # the client's request; None for our own (keep-alive, teardown)
    purpose: str = "client"
    track_index: int | None = None
    client_transport: TransportSpec | None = None


@dataclass
class _Target:
    """Where this connection's requests go and how URLs map between client and origin."""

    origin: RtspUrl
    client_base: str | None = None  # reverse mode: "rtsp://proxy:1091/vod/"
    origin_base: str | None = None  # reverse mode: "rtsp://origin:8554/"
    connect_to: tuple[str, int] = ("", 0)

    def to_origin(self, url: str) -> str:
        if self.client_base is None or self.origin_base is None:
            return url
        return rebase_url(url, self.client_base, self.origin_base) or url

    def to_client(self, url: str) -> str:
        if self.client_base is None or self.origin_base is None:
            return url
        return rebase_url(url, self.origin_base, self.client_base) or url


@dataclass
class _Described:
    """The origin's answer to DESCRIBE: what the cache decision and the fill need."""

    url: str  # origin URL of the presentation
    base: str  # origin Content-Base (or the URL)
    sdp: bytes
    description: SessionDescription | None
    validators: dict[str, str]
    on_demand: bool
    no_cache: bool
    authenticated: bool


@dataclass
class _SessionStats:
    start: float
    url: str = ""
    status: int = 0
    transport: str = ""
    origin_bytes: int = 0
    user_agent: str = ""
    reason: str = ""
    result: str = "PASS"
    variant: str = ""
    sinks: list[Sink] = field(default_factory=list)


class RtspProxyLayer:
    """Serves one client control connection; see the module docstring."""

    def __init__(self, ctx: SessionContext, dialect: RtspDialect | None = None) -> None:
        self.ctx = ctx
        self.dialect = dialect or RtspDialect()
        self.client = ctx.client
        self.reader = RtspReader()
        self.origin: Connection | None = None
        self.origin_reader = RtspReader(max_body=4 * 1024 * 1024)
        self.origin_state = "none"  # none | connecting | open | closed
        self.target: _Target | None = None
        self.queue: deque[Request] = deque()
        self.in_flight: Request | None = None
        self.pending: dict[int, _Pending] = {}
        self.origin_cseq = 0
        self.session_id: str | None = None
        self.origin_session: str | None = None
        self.origin_timeout = 60.0
        self.origin_public: set[str] = set()
        self.tracks: list[Track] = []
        self.channel_sinks: dict[int, Sink] = {}
        self.client_to_origin_channel: dict[int, int] = {}
        self.rtcp_to_origin: dict[tuple[str, int], int] = {}
        self.stats: _SessionStats | None = None
        self.access_checked = False
        self.authenticator = self.dialect.client_authenticator(ctx.settings)
        self.auth_user: str | None = None  # who the authenticator admitted
        self.auth_header: str | None = None  # the header that carried the credentials
        self.auth_check: CredentialCheck | None = None
        self.auth_conn: Connection | None = None
        self.auth_pending_user = ""
        self.closed = False
        self.last_origin_send = 0.0
        # caching (see core/rtsp/caching.py)
        self.described: _Described | None = None
        self.setup_controls: list[str] = []  # origin control URL of each set-up track
        self.cache_mode: str | None = None  # None (undecided) | PASS | MISS | HIT
        self.cache_key: CacheKey | None = None
        self.recorder: Recorder | None = None
        self.replay: Replay | None = None
        self.dialect_variant: str | None = None  # the dialect's own variant at the decision
        self.deferred_play: Request | None = None
        self.replay_playing = False
        self.resume_from: float | None = None
        """A PLAY answered here while the cache variant is not known yet (see
        :meth:`RtspDialect.variant`); sent to the origin once it is, unless the cache has it."""
        self.duration: float | None = None  # of the cached clip a HIT session plays
        self.background = False
        """True while a fill or a live feed goes on after its client left (the driver keeps
        the session while its origin connection is open)."""
        # live splitting (see core/splitter.py)
        self.feed: LiveFeed | None = None
        self.feed_key: tuple[str, str, str] | None = None
        self.feed_role: str | None = None  # owner | joiner
        self.feed_rtcp: dict[int, bool] = {}  # origin RTCP channel -> BYE seen
        self.reconnecting: float | None = None  # when the feed's origin connection dropped
        self.reconnect_attempt = 0
        self.taking_over = False
        """Our take-over PLAY is at the origin: the client's requests wait behind it (so a
        TEARDOWN that comes meanwhile is an owner's: the feed is handed on, not ended)."""
        self.feed_wait: tuple[Request, str | None] | None = None
        """(held request, cache mode to go back to) while waiting for a starting feed."""

    # -- event dispatch -------------------------------------------------------------------

    def handle(self, event: Event) -> list[Command]:
        if self.closed:
            return []
        out: list[Command] = []
        if isinstance(event, DataReceived):
            if event.conn is self.client:
                self._client_data(event.data, out)
            elif event.conn is self.origin:
                self._origin_data(event.data, out)
            elif event.conn is self.auth_conn:
                self._auth_data(event.data, out)
        elif isinstance(event, DatagramReceived):
            self._datagram(event, out)
        elif isinstance(event, OpenCompleted):
            if event.conn is self.auth_conn:
                self._auth_opened(event, out)
            else:
                self._origin_opened(event, out)
        elif isinstance(event, ConnectionClosed):
            if event.conn is self.client:
                self._client_gone(out)
            elif event.conn is self.origin:
                self._origin_closed(event, out)
            elif event.conn is self.auth_conn and self.auth_check is not None:
                self.auth_check.connection_closed(event.error or "")
                self._auth_done_if_answered(out)
        elif isinstance(event, TimerFired):
            self._timer(event.name, out)
        elif isinstance(event, Start):
            out.append(SetTimer("client-timeout", self.ctx.settings.session_timeout))
        elif isinstance(event, Notify) and event.topic == ORIGIN_CONTINUE:
            if self.origin is not None:
                self._origin_data(b"", out)
        elif (
            isinstance(event, Notify) and event.topic == "feed-ended" and self.feed_role == "joiner"
        ):
            self.feed = None
            self._shutdown(out, f"live feed ended: {event.detail}", notify_origin=True)
        elif isinstance(event, Notify) and event.topic == FEED_START:
            self._feed_wait_over(out)
        elif isinstance(event, Notify) and event.topic == FEED_HANDOVER:
            self._take_over(out)
        elif isinstance(event, Notify) and event.topic == FEED_HANDED_OVER and self.background:
            self._shutdown(out, "live feed handed over", notify_origin=True)
        return out

    def abort(self, reason: str) -> list[Command]:
        """The driver ends this session after a failure of ours (see
        ``SessionDriver._layer_failed``): abort the fill, end the feed, write the record."""
        out: list[Command] = []
        if not self.closed:
            self._shutdown(out, reason, notify_origin=True, status=500)
        return out

    # -- client side ----------------------------------------------------------------------

    def _client_data(self, data: bytes, out: list[Command]) -> None:
        self.reader.receive_data(data)
        try:
            for ev in self.reader.events():
                if isinstance(ev, Request):
                    self._client_request(ev, out)
                elif isinstance(ev, InterleavedFrame):
                    self._client_frame(ev, out)
                else:  # a response from the client: nothing we asked for
                    out.append(Log("DEBUG", f"{self.client}: ignored a response from the client"))
                if self.closed:
                    return
        except ProtocolError as exc:
            why = str(exc)[:160]
            out.append(Log("INFO", f"{self.client}: bad RTSP from client: {why}"))
            self._reply(out, exc.status_hint, None)
            self._shutdown(
                out, f"bad request: {why}", notify_origin=True, status=exc.status_hint, drain=True
            )

    def _client_frame(self, frame: InterleavedFrame, out: list[Command]) -> None:
        """RTCP from a TCP client: refreshes the session, and the origin hears it too."""
        out.append(SetTimer("client-timeout", self.ctx.settings.session_timeout))
        origin_channel = self.client_to_origin_channel.get(frame.channel)
        if origin_channel is not None and self.origin_state == "open" and self.origin:
            out.append(SendData(self.origin, build_interleaved(origin_channel, frame.payload)))

    def _datagram(self, event: DatagramReceived, out: list[Command]) -> None:
        """RTCP receiver reports from a UDP client (or its NAT-opening RTP packets)."""
        out.append(SetTimer("client-timeout", self.ctx.settings.session_timeout))
        origin_channel = self.rtcp_to_origin.get(event.addr)
        if (
            event.rtcp
            and origin_channel is not None
            and self.origin_state == "open"
            and self.origin
        ):
            out.append(SendData(self.origin, build_interleaved(origin_channel, event.data)))

    def _client_request(self, req: Request, out: list[Command]) -> None:
        out.append(SetTimer("client-timeout", self.ctx.settings.session_timeout))
        uri = self.dialect.request_uri(req.uri)
        if uri != req.uri:
            req = dataclasses.replace(req, uri=uri)
        cseq = req.cseq
        if cseq is None:
            self._reply(out, 400, None, reason="Bad Request (no CSeq)")
            return
        if not self.access_checked and not self._check_access(req, out):
            return
        if req.method not in SUPPORTED_METHODS:
            self._reply(out, 501, cseq, [("Allow", ", ".join(SUPPORTED_METHODS))])
            return
        if "Proxy-Require" in req.headers:
            unsupported = ", ".join(req.headers.get_all("Proxy-Require"))
            self._reply(out, 551, cseq, [("Unsupported", unsupported)])
            return
        if req.method == "OPTIONS" and (req.uri == "*" or (self.target is None and not req.uri)):
            public = ("Public", ", ".join(SUPPORTED_METHODS))
            self._reply(out, 200, cseq, [public, *self.dialect.options_headers()])
            return
        error = self._session_error(req)
        if error:
            self._reply(out, error, cseq)
            return
        if len(self.queue) >= MAX_QUEUED_REQUESTS:
            self._reply(out, 503, cseq, reason="Service Unavailable (too many queued requests)")
            return
        self.queue.append(req)
        self._pump(out)

    def _session_error(self, req: Request) -> int | None:
        """454/455 for requests naming a session we do not have, or out of order."""
        given = req.headers.get("Session")
        if given is not None:
            try:
                sid = parse_session(given).id
            except ProtocolError:
                return 454
            if sid != self.session_id:
                return 454
            return None
        if req.method in SESSION_METHODS:
            return 455 if self.session_id is None else 454
        return None

    def _check_access(self, req: Request, out: list[Command]) -> bool:
        self.access_checked = True
        host = self.client.peer[0]
        allowed = self.ctx.access_allowed(host)
        if allowed and self.ctx.hook is not None:
            verdict = self.ctx.hook.mediacache_access_check(
                client_host=host, format_name=self.ctx.format_name, url=req.uri
            )
            allowed = verdict is not False
        if allowed:
            return True
        out.append(Log("WARNING", f"{self.client}: access denied for {req.method} {req.uri}"))
        self._reply(out, 403, req.cseq)
        self._begin_stats(req)
        self._shutdown(out, "access denied", notify_origin=False, status=403, result="DENIED")
        return False

    # -- forwarding -----------------------------------------------------------------------

    def _pump(self, out: list[Command]) -> None:
        """Send the next queued client request once the origin is ready and idle."""
        while self.queue and self.in_flight is None and not self.closed and not self.taking_over:
            req = self.queue[0]
            if self.authenticator is not None and self.auth_user is None:
                if self.auth_check is not None:
                    return  # the directory is being asked; its answer pumps again
                if not self._authenticate(req, out):
                    continue  # answered 401; each queued request is checked on its own
                return
            if self.target is None:
                error = self._resolve_target(req, out)
                if error and req.method == "OPTIONS" and error[0] == 404:
                    self.queue.popleft()  # OPTIONS of the bare server URL (VLC): ours to answer
                    public = ("Public", ", ".join(SUPPORTED_METHODS))
                    self._reply(out, 200, req.cseq, [public, *self.dialect.options_headers()])
                    continue
                if error:
                    self.queue.popleft()
                    self._reply(out, error[0], req.cseq, reason=error[1])
                    continue
            if self.origin_state in ("none", "closed"):
                self._open_origin(out)
                return
            if self.origin_state == "connecting":
                return
            self.queue.popleft()
            self._forward(req, out)

    def _resolve_target(self, req: Request, out: list[Command]) -> tuple[int, str] | None:
        try:
            url = parse_url(req.uri)
        except ProtocolError:
            return 400, "Bad Request (request URL must be absolute rtsp://)"
        # A URL on our port naming another host, with no route of ours, is forwarded; if that
        # host is in fact us (behind a NAT, say), the request comes back, one hop longer each
        # time: our Via entries count the hops and end such a loop.
        max_hops = 8
        hops = sum(
            "mediacache" in hop.split() for v in req.headers.get_all("Via") for hop in v.split(",")
        )
        if hops >= max_hops:
            out.append(Log("WARNING", f"{self.client}: forwarding loop for {req.uri}"))
            return 508, f"Loop Detected (came through {hops} mediacache proxies)"
        hooked = None
        if self.ctx.hook is not None:
            hooked = self.ctx.hook.mediacache_resolve_origin(
                format_name=self.ctx.format_name, url=req.uri
            )
        on_our_port = url.effective_port(554) == self.ctx.listen_port
        if hooked:
            origin = parse_url(hooked)
            target = _Target(origin=origin)
        elif on_our_port and (reverse := self._reverse_target(url)) is not None:
            # a route of ours, whatever the host: players name us by any of our addresses or
            # names, or by those of an L4 balancer in front of us (DESIGN.md, "Deployment")
            target = reverse
        elif self._addressed_to_us(url) or (
            on_our_port and req.method == "OPTIONS" and url.path == "/"
        ):  # (the bare server URL on our port, whatever the host: VLC's realrtsp greeting)
            out.append(Log("INFO", f"{self.client}: no route for {req.uri}"))
            return 404, "Not Found (no route for this path)"
        else:
            if not self.ctx.settings.forward:
                return 403, "Forbidden (forward proxying is disabled)"
            target = _Target(origin=url)
        port = target.origin.effective_port(self.ctx.settings.origin_port)
        target.connect_to = (target.origin.host, port)
        if self.ctx.parent:
            parent = parse_url(self.ctx.parent)
            target.connect_to = (parent.host, parent.effective_port(554))
        self.target = target
        return None

    def _addressed_to_us(self, url: RtspUrl) -> bool:
        """Does ``url``, which no route of ours matched, name this proxy (404) rather than a
        server to forward to (a parent mediacache on the same port, say)?

        Its port must be the one the connection came in on, and its host ours: the address
        the connection came in on, a listen address, loopback while we listen on a wildcard
        address, or ``localhost``. Other names and addresses are another server's: which
        names (or NAT addresses) are ours only DNS and the network know, and a layer does
        not resolve; if one is ours after all, the Via hop count ends the loop (see
        :meth:`_resolve_target`). Same rule as the MMS layer's (``mediacache_wmt.routing``).
        """
        if url.effective_port(554) != self.ctx.listen_port:
            return False

        def plain(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
            try:
                addr = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                return None
            if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
                return addr.ipv4_mapped
            return addr

        host = plain(url.host)
        if host is None:
            return url.host.lower().rstrip(".") == "localhost"
        ours = []
        if self.client.local is not None:
            ours.append(plain(self.client.local[0]))
        for listen in (self.ctx.settings.listen, *self.ctx.settings.also_listen):
            if listen:
                ours.append(plain(split_host_port(listen, self.ctx.listen_port)[0]))
        if host in ours:
            return True
        # a wildcard listen holds the port on every local address ("::" on IPv4 ones too)
        wildcards = {a.version for a in ours if a is not None and a.is_unspecified}
        return host.is_loopback and (host.version in wildcards or 6 in wildcards)

    def _reverse_target(self, url: RtspUrl) -> _Target | None:
        best = None
        for route in self.ctx.routes:
            if (
                route.format == self.ctx.format_name
                and url.path.startswith(route.prefix)
                and (best is None or len(route.prefix) > len(best.prefix))
            ):
                best = route
        if best is None:
            return None
        client_base = f"{url.scheme}://{url.netloc}{best.prefix}"
        origin_url = best.origin + url.path[len(best.prefix) :]
        return _Target(
            origin=parse_url(origin_url), client_base=client_base, origin_base=best.origin
        )

    def _open_origin(self, out: list[Command]) -> None:
        assert self.target is not None
        self.origin = Connection("origin", self.target.connect_to)
        self.origin_reader = RtspReader(max_body=4 * 1024 * 1024)
        self.origin_state = "connecting"
        out.append(OpenConnection(self.origin, timeout=self.ctx.settings.origin_connect_timeout))

    def _origin_opened(self, event: OpenCompleted, out: list[Command]) -> None:
        if event.conn is not self.origin:
            return
        if event.error is None:
            self.origin_state = "open"
            greeting = self.dialect.origin_greeting()
            if greeting is not None:  # ahead of anything else on this connection
                target = self.target
                assert target is not None
                uri = str(target.origin)
                self._send_origin(out, "OPTIONS", uri, greeting, b"", _Pending(None, "greeting"))
            if self.reconnecting is not None:
                self._reconnect_setup(0, out)
                return
            self._pump(out)
            return
        self.origin_state = "closed"
        if self.reconnecting is not None:
            self._reconnect_later(out, f"reconnect failed: {event.error}")
            return
        status = 504 if event.timed_out else 502
        host, port = event.conn.peer
        target = self.target
        assert target is not None
        # the origin's own address, as _resolve_target computes it (the format's origin_port
        # for a URL naming none): anything else we connected to was the parent
        direct = (target.origin.host, target.origin.effective_port(self.ctx.settings.origin_port))
        via_parent = bool(self.ctx.parent) and target.connect_to != direct
        if via_parent and self.ctx.settings.parent_fallback:
            out.append(
                Log(
                    "WARNING",
                    f"{self.client}: parent {host}:{port} unreachable "
                    f"({event.error}); going to the origin directly",
                )
            )
            target.connect_to = direct
            self._open_origin(out)
            return
        why = f"{'parent' if via_parent else 'origin'} {host}:{port} unreachable: {event.error}"
        out.append(Log("WARNING", f"{self.client}: {why}"))
        while self.queue:
            req = self.queue.popleft()
            self._reply(out, status, req.cseq, [("X-Mediacache-Error", why)])
        if self.stats:
            self.stats.reason = why
        self.target = None if self.session_id is None else self.target

    def _forward(self, req: Request, out: list[Command]) -> None:
        assert self.target is not None and self.origin is not None
        if self.stats is None or (req.method == "DESCRIBE" and self.session_id is None):
            self._begin_stats(req)
        uri = self.target.to_origin(req.uri) if req.uri != "*" else req.uri
        if req.method != "OPTIONS" or req.uri != "*":
            try:
                mapped = parse_url(uri)
            except ProtocolError:
                self._reply(out, 400, req.cseq)
                return
            if (mapped.host, mapped.effective_port(self.ctx.settings.origin_port)) != (
                self.target.origin.host,
                self.target.origin.effective_port(self.ctx.settings.origin_port),
            ):
                self._reply(out, 400, req.cseq, reason="Bad Request (one origin per connection)")
                return
        refusal = self.dialect.refuse(req)
        if refusal is not None:
            status, why = refusal
            out.append(Log("INFO", f"{self.client}: {req.method} refused: {why}"))
            self._reply(out, status, req.cseq, [("X-Mediacache-Error", why)])
            return
        if req.method in ("PLAY", "PAUSE") and self._cache_play_pause(req, out):
            return
        if req.method == "TEARDOWN" and self.feed_role == "owner":
            # the origin session carries the feed of other viewers: it must not end here
            self._reply(out, 200, req.cseq)
            self._client_gone(out)
            out.append(CloseConnection(self.client))
            return
        spec = self._choose_client_transport(req) if req.method == "SETUP" else None
        if req.method == "SETUP" and spec is None:
            if not self._udp_allowed():
                why = "authenticated sessions are served over TCP only"
                out.append(Log("INFO", f"{self.client}: 461: {why}"))
                self._reply(
                    out, 461, req.cseq, [("X-Mediacache-Error", why)],
                    reason=f"Unsupported Transport ({why})",
                )  # fmt: skip
            else:
                self._reply(out, 461, req.cseq)
            return
        pending = _Pending(request=req)
        headers = req.headers
        for name in _HOP_REQUEST:
            headers = headers.without(name)
        if self.auth_header is not None:  # the proxy's credentials, not the origin's
            headers = headers.without(self.auth_header)
        headers = self.dialect.request_to_origin(req, headers)
        if self.cache_mode == "DEFER" and self._decide_deferred(req, out):
            return
        if self.dialect_variant is not None and self.cache_mode in ("MISS", "HIT"):
            own = self.dialect.variant(self._relative_controls())
            if own is not None and own != self.dialect_variant:
                self.dialect_variant = own
                self._variant_changed(self._keyed(own), out)
        if spec is not None:
            index = len(self.tracks)
            pending.track_index = index
            pending.client_transport = spec
            headers = headers.add(
                "Transport", self.dialect.origin_transport(index, spec).build()
            )
        if (self.origin_session and "Session" in req.headers) or (
            self.origin_session and req.method == "SETUP"
        ):
            headers = headers.add("Session", self.origin_session)
        headers = headers.add("Via", VIA)
        body = req.body
        self.in_flight = req
        self._send_origin(out, req.method, uri, headers, body, pending)
        if self.resume_from is not None:
            self._resume_at_origin(self.resume_from, out)
            self.resume_from = None

    def _resume_at_origin(self, npt: float, out: list[Command]) -> None:
        """A HIT that became PASS mid-play: its accounting session plays from ``npt``."""
        if self.described is None or self.origin_session is None:
            return
        headers = Headers(
            [("Session", self.origin_session), ("Range", f"npt={npt:.3f}-"), ("Via", VIA)]
        )
        self._send_origin(out, "PLAY", self.described.base, headers, b"", _Pending(None, "resume"))

    def _send_origin(
        self,
        out: list[Command],
        method: str,
        uri: str,
        headers: Headers,
        body: bytes,
        pending: _Pending,
    ) -> None:
        assert self.origin is not None
        self.origin_cseq += 1
        headers = Headers([("CSeq", str(self.origin_cseq)), *headers])
        self.pending[self.origin_cseq] = pending
        self.last_origin_send = self.ctx.clock()
        out.append(SendData(self.origin, build_request(Request(method, uri, headers, body))))
        out.append(SetTimer("origin-response", self.ctx.settings.origin_response_timeout))

    def _choose_client_transport(self, req: Request) -> TransportSpec | None:
        value = req.headers.get("Transport")
        if not value:
            return None
        try:
            specs = parse_transports(value)
        except ProtocolError:
            return None
        for spec in specs:
            if spec.lower_transport == "UDP" and not self._udp_allowed():
                continue
            if self.dialect.client_transport_usable(spec):
                return spec
        return None

    def _udp_allowed(self) -> bool:
        return self.auth_user is None or self.authenticator is None or (
            self.authenticator.udp_allowed
        )

    # -- player authentication at the proxy (the dialect's ClientAuthenticator) --------------

    def _authenticate(self, req: Request, out: list[Command]) -> bool:
        """Start checking ``req``'s credentials (True: the check runs; False: answered 401)."""
        authenticator = self.authenticator
        assert authenticator is not None
        credentials = None
        for name in ("Proxy-Authorization", "Authorization"):
            value = req.headers.get(name)
            if value is not None:
                credentials = parse_basic_credentials(value)
                self.auth_header = name
                break
        if credentials is None:
            out.append(Log("INFO", f"{self.client}: {req.method} without credentials: 401"))
            self._refuse_credentials(out)
            return False
        user, password = credentials
        check = authenticator.check(user, password)
        if check.result is not None:
            self._auth_done(user, check, out)
            return False
        self.auth_check = check
        self.auth_pending_user = user
        self.auth_conn = Connection("auth", authenticator.address)
        out.append(OpenConnection(self.auth_conn, timeout=authenticator.timeout))
        out.append(SetTimer("auth-timeout", authenticator.timeout))
        return True

    def _auth_opened(self, event: OpenCompleted, out: list[Command]) -> None:
        check = self.auth_check
        if check is None or self.auth_conn is None:
            return
        if event.error:
            check.connection_closed(event.error)
            self._auth_done_if_answered(out)
            return
        out.append(SendData(self.auth_conn, check.start()))

    def _auth_data(self, data: bytes, out: list[Command]) -> None:
        check = self.auth_check
        if check is None or self.auth_conn is None:
            return
        reply = check.receive(data)
        if reply:
            out.append(SendData(self.auth_conn, reply))
        self._auth_done_if_answered(out)

    def _auth_done_if_answered(self, out: list[Command]) -> None:
        """Once the check has its result: close the directory connection and go on."""
        check = self.auth_check
        if check is None or check.result is None:
            return
        if self.auth_conn is not None:
            if self.auth_conn.connected and not self.auth_conn.closed:
                out.append(SendData(self.auth_conn, check.close()))
            out.append(CloseConnection(self.auth_conn))
            self.auth_conn = None
        out.append(CancelTimer("auth-timeout"))
        self.auth_check = None
        self._auth_done(self.auth_pending_user, check, out)
        self._pump(out)

    def _auth_done(self, user: str, check: CredentialCheck, out: list[Command]) -> None:
        result = check.result
        assert result is not None
        if result.ok:
            self.auth_user = user
            out.append(Log("INFO", f"{self.client}: user {user!r} authenticated"))
            return
        self.auth_header = None
        if result.unavailable:
            why = "authentication server unavailable"
            out.append(Log("ERROR", f"{self.client}: user {user!r} not checked: {result.reason}"))
            req = self.queue.popleft()
            self._reply(
                out, 503, req.cseq, [("X-Mediacache-Error", why)],
                reason=f"Service Unavailable ({why})",
            )  # fmt: skip
            return
        out.append(Log("WARNING", f"{self.client}: user {user!r} refused: {result.reason}"))
        self._refuse_credentials(out)

    def _refuse_credentials(self, out: list[Command]) -> None:
        """401 to the request that waited (the player asks again with credentials)."""
        req = self.queue.popleft()
        assert self.authenticator is not None
        challenge = ("WWW-Authenticate", f'Basic realm="{self.authenticator.realm}"')
        self._reply(out, 401, req.cseq, [challenge])

    # -- origin side ----------------------------------------------------------------------

    def _origin_data(self, data: bytes, out: list[Command]) -> None:
        self.origin_reader.receive_data(data)
        sinks = self.channel_sinks
        stats = self.stats
        try:
            while (ev := self.origin_reader.next_event()) is not None:
                if type(ev) is InterleavedFrame:
                    sink = sinks.get(ev.channel)
                    if sink is not None:
                        sink.send(ev.payload)
                    if stats is not None:
                        stats.origin_bytes += len(ev.payload)
                    if self.recorder is not None:
                        self._record(ev, out)
                    if self.feed_role == "owner" and ev.channel in self.feed_rtcp:
                        self._feed_rtcp(ev, out)
                elif isinstance(ev, Response):
                    self._origin_response(ev, out)
                    if self.closed:
                        return
                    if self.origin_reader.buffered:
                        # Data behind this response must not overtake the reply we relay (a
                        # sink writes at once, our reply only when the driver runs ``out``):
                        # ffmpeg drops interleaved data that comes while it awaits a reply.
                        self.ctx.post(Notify(ORIGIN_CONTINUE))
                        return
                elif isinstance(ev, Request):
                    self._origin_request(ev, out)
        except ProtocolError as exc:
            out.append(Log("WARNING", f"{self.client}: bad RTSP from origin: {exc}"))
            self._fail_origin(out, 502, f"bad RTSP from origin: {exc}")

    def _origin_request(self, req: Request, out: list[Command]) -> None:
        """Origins rarely send requests (keep-alives, announcements): acknowledge, don't relay."""
        assert self.origin is not None
        status = 200 if req.method in ("GET_PARAMETER", "SET_PARAMETER", "OPTIONS") else 501
        headers = [("CSeq", str(req.cseq))] if req.cseq is not None else []
        resp = Response(status, REASONS.get(status, ""), Headers(headers))
        out.append(SendData(self.origin, build_response(resp)))

    def _origin_response(self, resp: Response, out: list[Command]) -> None:
        pending = self.pending.pop(resp.cseq, None) if resp.cseq is not None else None
        if pending is None:
            out.append(Log("DEBUG", f"{self.client}: origin answered an unknown CSeq {resp.cseq}"))
            return
        if not self.pending:
            out.append(CancelTimer("origin-response"))
        public = resp.headers.get("Public")
        if public:
            self.origin_public = {m.strip().upper() for m in public.split(",")}
        if resp.status < 300 and "Session" in resp.headers:
            try:
                sess = parse_session(resp.headers.get("Session") or "")
            except ProtocolError:
                sess = None
            if sess is not None:
                self.origin_session = sess.id
                if sess.timeout:
                    self.origin_timeout = float(sess.timeout)
                out.append(SetTimer("origin-keepalive", max(1.0, self.origin_timeout / 2)))
        if pending.purpose == "reconnect":
            self._reconnect_step(resp, pending, out)
            return
        if pending.purpose == "greeting":
            self.dialect.origin_greeted(resp.headers)
            return
        if pending.purpose == "deferred-play":
            self._deferred_play_done(resp, pending, out)
            return
        if pending.purpose == "take-over":
            self._take_over_done(resp, out)
            return
        if pending.purpose != "client" or pending.request is None:
            return
        req = pending.request
        self.in_flight = None
        self._relay_response(req, resp, pending, out)
        self._pump(out)

    def _relay_response(
        self, req: Request, resp: Response, pending: _Pending, out: list[Command]
    ) -> None:
        assert self.target is not None
        headers = resp.headers
        for name in _HOP_RESPONSE:
            headers = headers.without(name)
        headers = self.dialect.response_to_client(req, headers)
        extra: list[tuple[str, str]] = []
        body = resp.body
        for name in ("Content-Base", "Content-Location"):
            value = headers.get(name)
            if value:
                headers = headers.with_(name, self.target.to_client(value))
        if "RTP-Info" in headers:
            headers = headers.with_("RTP-Info", self._rewrite_rtp_info(headers.get("RTP-Info")))
        ok = 200 <= resp.status < 300
        if ok and req.method == "DESCRIBE":
            self._remember_description(req, resp)
        if ok and req.method == "PLAY" and self.cache_mode == "MISS":
            self._begin_fill(req, resp, out)
        if req.method == "PLAY" and self.cache_mode == "FEED" and self.feed is None:
            if ok:
                self._start_feed(out)
            else:
                self._feed_start_failed(out, resp.status)
        if ok and req.method == "DESCRIBE" and body and self.target.client_base is not None:
            try:
                sdp = rewrite_controls(parse_sdp(body), self.target.to_client)
                body = build_sdp(sdp)
            except ProtocolError as exc:
                out.append(Log("WARNING", f"{self.client}: origin SDP not rewritten: {exc}"))
        if ok and req.method == "SETUP":
            transport = self._setup_done(req, resp, pending, out)
            if transport is None:
                self._reply(out, 461, req.cseq, reason="Unsupported Transport (origin reply)")
                return
            extra.append(("Transport", transport.build()))
            self.setup_controls.append(self.target.to_origin(req.uri))
        if self.session_id is not None and (ok or "Session" in req.headers):
            extra.append(
                ("Session", f"{self.session_id};timeout={int(self.ctx.settings.session_timeout)}")
            )
        headers = headers.add("Via", VIA)
        if (
            self.stats is not None
            and ok
            and req.method in ("DESCRIBE", "PLAY")
            and self.stats.status < 300
        ):
            self.stats.status = resp.status
        self._reply(out, resp.status, req.cseq, [*extra, *headers], body, reason=resp.reason)
        if req.method == "TEARDOWN" and ok:
            self._end_session(out, "teardown")

    def _rewrite_rtp_info(self, value: str | None) -> str:
        assert self.target is not None and value is not None
        if self.target.client_base is None:
            return value
        try:
            infos = parse_rtp_info(value)
        except ProtocolError:
            return value
        return ", ".join(
            dataclasses.replace(info, url=self.target.to_client(info.url)).build() for info in infos
        )

    def _setup_done(
        self, req: Request, resp: Response, pending: _Pending, out: list[Command]
    ) -> TransportSpec | None:
        """Wire the new track's origin channels to the client's sinks; the reply's Transport."""
        spec = pending.client_transport
        assert spec is not None and pending.track_index is not None
        try:
            origin_specs = parse_transports(resp.headers.get("Transport") or "")
        except ProtocolError:
            return None
        origin_spec = origin_specs[0] if origin_specs else None
        if origin_spec is None or origin_spec.interleaved is None:
            return None
        if self.session_id is None:
            self.session_id = secrets.token_hex(8)
        rtp_ch, rtcp_ch = origin_spec.interleaved
        single = rtp_ch == rtcp_ch  # one channel (Real's RDT): no RTCP channel
        host = self.client.peer[0]
        plane = self.ctx.dataplane
        if spec.lower_transport == "TCP":
            used = {c for t in self.tracks if t.client_channels for c in t.client_channels}
            channels = spec.interleaved
            if channels is None or channels[0] in used or channels[1] in used:
                channels = self.dialect.client_channels(pending.track_index, req, used)
            elif single and channels[0] == channels[1]:
                channels = (channels[0], channels[0])
            rtp_sink = self.dialect.client_sink(
                plane.interleaved_sink(self.client, channels[0]), req, rtp_ch, channels[0]
            )
            rtcp_sink = plane.interleaved_sink(self.client, channels[1])
            reply = TransportSpec(
                protocol=spec.protocol,
                unicast=True,
                interleaved=channels,
                ssrc=origin_spec.ssrc,
                mode=origin_spec.mode,
            )
            self.client_to_origin_channel[channels[1]] = rtcp_ch
            self.client_to_origin_channel[channels[0]] = rtp_ch
            track = Track(req.uri, (rtp_ch, rtcp_ch), reply, rtp_sink, rtcp_sink, channels)
            transport_name = "tcp"
        else:
            assert spec.client_port is not None
            rtp_port, rtcp_port = spec.client_port
            if rtcp_port == rtp_port:
                rtcp_port = rtp_port + 1
            rtp_sink = self.dialect.client_sink(
                plane.udp_sink((host, rtp_port), rtcp=False), req, rtp_ch, None
            )
            rtcp_sink = plane.udp_sink((host, rtcp_port), rtcp=True)
            reply = TransportSpec(
                protocol=spec.protocol,
                unicast=True,
                client_port=(rtp_port, rtcp_port),
                server_port=plane.server_ports,
                ssrc=origin_spec.ssrc,
                mode=origin_spec.mode,
            )
            watched = ((host, rtcp_port), (host, rtp_port))
            for addr in watched:
                out.append(WatchDatagrams(addr))
            self.rtcp_to_origin[(host, rtcp_port)] = rtcp_ch
            track = Track(req.uri, (rtp_ch, rtcp_ch), reply, rtp_sink, rtcp_sink, watched=watched)
            transport_name = "udp"
        if not single:
            self.channel_sinks[rtcp_ch] = rtcp_sink
        self.channel_sinks[rtp_ch] = rtp_sink
        self.tracks.append(track)
        if self.stats is not None:
            self.stats.sinks += [rtp_sink, rtcp_sink]
            if self.stats.transport and self.stats.transport != transport_name:
                self.stats.transport = "mixed"
            else:
                self.stats.transport = transport_name
        return reply

    def _origin_closed(self, event: ConnectionClosed, out: list[Command]) -> None:
        self.origin_state = "closed"
        why = "origin closed the connection" + (f": {event.error}" if event.error else "")
        if self.feed is not None and self.ctx.splitter is not None:
            # the feed (owner) or this viewer's accounting session (joiner) comes back
            self._reconnect_later(out, why)
            return
        if self.in_flight is not None or self.queue or self.session_id is not None:
            self._fail_origin(out, 502, why)
        else:
            self.origin = None

    def _fail_origin(self, out: list[Command], status: int, why: str) -> None:
        """The origin is gone or broken: answer what waits, then end the client's session."""
        if self.in_flight is not None:
            self._reply(out, status, self.in_flight.cseq, [("X-Mediacache-Error", why)])
            self.in_flight = None
        while self.queue:
            req = self.queue.popleft()
            self._reply(out, status, req.cseq, [("X-Mediacache-Error", why)])
        self._shutdown(out, why, notify_origin=False, status=status)

    # -- caching ----------------------------------------------------------------------------

    def _remember_description(self, req: Request, resp: Response) -> None:
        assert self.target is not None
        url = self.target.to_origin(req.uri)
        base = resp.headers.get("Content-Base") or resp.headers.get("Content-Location") or url
        try:
            sd: SessionDescription | None = parse_sdp(resp.body) if resp.body else None
        except ProtocolError:
            sd = None
        on_demand = sd is not None and is_on_demand(sd)
        if self.ctx.hook is not None:
            live = self.ctx.hook.mediacache_is_live(
                format_name=self.ctx.format_name, url=url, description=resp.body
            )
            if live is not None:
                on_demand = not live
        route_live = self._route_live()
        if route_live is not None:
            on_demand = not route_live
        self.described = _Described(
            url=url,
            base=base,
            sdp=resp.body,
            description=sd,
            validators=validators_of(resp.headers, resp.body),
            on_demand=on_demand,
            no_cache=forbids_caching(resp.headers),
            authenticated="Authorization" in req.headers,
        )
        self.setup_controls = []

    def _route_live(self) -> bool | None:
        if self.target is None or self.target.client_base is None:
            return None
        for route in self.ctx.routes:
            if route.origin == self.target.origin_base and route.format == self.ctx.format_name:
                return route.live
        return None

    def _cache_play_pause(self, req: Request, out: list[Command]) -> bool:
        """Decide HIT/MISS/PASS/SPLIT at the first PLAY; serve HIT and split sessions'
        PLAY/PAUSE ourselves. True when answered here (it must not go to the origin)."""
        if req.method == "PLAY" and self.cache_mode is None:
            self._decide(req, out)
        if self.cache_mode == "WAIT":
            self._wait_for_feed(req, None, out)
            return True
        if self.cache_mode == "DEFER":
            self._defer_play_pause(req, out)
            return True
        if self.cache_mode == "HIT":
            self._local_play_pause(req, out)
            return True
        if self.cache_mode == "SPLIT" or (self.cache_mode == "FEED" and self.feed is not None):
            self._split_play_pause(req, out)
            return True
        recorder = self.recorder
        if recorder is not None:
            now = self.ctx.monotonic()
            if req.method == "PAUSE":
                recorder.pause(now)
            elif self._requested_start(req) not in (None, 0.0) and recorder.paused_at is None:
                self._abort_fill(out, "the client seeked during the fill")
            elif self._requested_start(req) not in (None,) and recorder.paused_at is not None:
                position = recorder.paused_at - recorder.started - recorder.paused_total
                if abs((self._requested_start(req) or 0.0) - position) > 0.5:
                    self._abort_fill(out, "the client seeked during the fill")
        return False

    @staticmethod
    def _requested_start(req: Request) -> float | None:
        value = req.headers.get("Range")
        if not value:
            return None
        try:
            return parse_range(value).start
        except ProtocolError:
            return None

    def _pass(self, why: str, out: list[Command]) -> None:
        self.cache_mode = "PASS"
        out.append(Log("DEBUG", f"{self.client}: not cached: {why}"))

    def _decide(self, req: Request, out: list[Command]) -> None:
        cache = self.ctx.cache
        described = self.described
        if described is None or described.description is None or not self.tracks:
            return self._pass("no description", out)
        if not described.on_demand:
            if self.ctx.splitter is None or not self.dialect.can_split:
                return self._pass("live, and splitting is disabled", out)
            own = self.dialect.variant(self._relative_controls())
            if own is None:
                self.cache_mode = "DEFER"
                return None
            return self._decide_split(self._keyed(own))
        if cache is None or not cache.settings.enabled or not self.dialect.can_cache:
            return self._pass("cache disabled (or not for this format yet)", out)
        if described.no_cache:
            return self._pass("origin said no-cache", out)
        if described.authenticated and not self._may_cache_authenticated(described.url):
            return self._pass("authenticated content", out)
        own = self.dialect_variant = self.dialect.variant(self._relative_controls())
        if own is None:
            self.cache_mode = "DEFER"
            return None
        variant = self._keyed(own)
        key = CacheKey.make(self.ctx.format_name, described.url, variant)
        if self.stats is not None:
            self.stats.variant = variant
        store = cache.store
        obj = store.get(key)
        if obj is not None and still_valid(obj.meta.validators, described.validators):
            return self._start_hit(key, obj, out)
        if obj is not None:
            out.append(Log("INFO", f"{self.client}: {key.url} changed at the origin: refetching"))
            store.purge(key)
        fill = store.get_fill(key)
        if fill is not None and still_valid(fill.meta.validators, described.validators):
            return self._start_hit(key, fill, out)
        if self._requested_start(req) not in (None, 0.0):
            return self._pass("a miss that does not start at 0", out)
        for name in ("Scale", "Speed"):
            value = req.headers.get(name)
            if value and value.strip() not in ("1", "1.0"):
                return self._pass(f"{name}: {value}", out)
        if fill is not None:
            return self._pass("a different version of the clip is being filled", out)
        self.cache_mode = "MISS"
        self.cache_key = key
        if self.stats is not None:
            self.stats.result = "MISS"
        return None

    def _variant_changed(self, variant: str, out: list[Command]) -> None:
        """The client now wants another variant (a SureStream rate switch) mid-session. A MISS
        aborts its fill (what follows is not the variant being stored). A HIT goes on from the
        same media time with the new variant's object if the cache has it, else from the
        origin (its accounting session is asked to PLAY from there: PASS from now on)."""
        if self.cache_mode == "MISS":
            if self.recorder is not None:
                self._abort_fill(out, "the client changed what it receives (variant)")
            return
        replay, described, cache = self.replay, self.described, self.ctx.cache
        assert replay is not None and described is not None and cache is not None
        playing = self.replay_playing
        position = replay.pause()
        out.append(StopPlayout(replay))
        if self.cache_key is not None:
            cache.leave(self.cache_key)
        self.replay = None
        key = CacheKey.make(self.ctx.format_name, described.url, variant)
        obj = cache.store.get(key)
        if obj is not None and still_valid(obj.meta.validators, described.validators):
            self._start_hit(key, obj, out)
        if self.replay is not None:
            for old_sink, new_sink in zip(replay.sinks, self.replay.sinks, strict=False):
                self.dialect.continue_numbering(replay, self.replay, old_sink, new_sink)
            if self.stats is not None:
                self.stats.variant = variant
            out.append(Log("INFO", f"{self.client}: variant switch to [{variant}] from the cache"))
            if playing:
                self.replay.play(self.ctx.monotonic(), position)
                out.append(StartPlayout(self.replay))
            return
        self.cache_mode = "PASS"
        out.append(Log("INFO", f"{self.client}: variant [{variant}] not cached: origin from now"))
        if playing:
            self.resume_from = position  # PLAY at the origin, behind the request that switched

    def _defer_play_pause(self, req: Request, out: list[Command]) -> None:
        """PLAY/PAUSE while the variant is unknown: answered here; the PLAY is kept."""
        session = [
            ("Session", f"{self.session_id};timeout={int(self.ctx.settings.session_timeout)}")
        ]
        if req.method == "PAUSE":
            self._reply(out, 200, req.cseq, session)
            return
        self.deferred_play = req
        described = self.described
        sd = described.description if described is not None else None
        duration = duration_of(sd) if sd is not None else None
        start = self._requested_start(req) or 0.0
        end = f"{duration:.3f}" if duration is not None else ""
        self._reply(out, 200, req.cseq, [*session, ("Range", f"npt={start:.3f}-{end}")])
        if self.stats is not None and self.stats.status < 300:
            self.stats.status = 200

    def _decide_deferred(self, req: Request, out: list[Command]) -> bool:
        """The client's ``req`` may have made the variant known: decide now. A HIT answers
        ``req`` here and starts the replay (True); otherwise the kept PLAY goes to the origin
        ahead of ``req`` (False: forward ``req`` as usual)."""
        play = self.deferred_play
        if play is None or self.dialect.variant(self._relative_controls()) is None:
            return False
        self.deferred_play = None
        self.cache_mode = None
        self._decide(play, out)
        if self.cache_mode == "WAIT":  # ``req`` waits; the kept PLAY too, still unsent
            self.deferred_play = play
            self._wait_for_feed(req, "DEFER", out)
            return True
        if self.cache_mode in ("HIT", "SPLIT"):
            session = [
                ("Session", f"{self.session_id};timeout={int(self.ctx.settings.session_timeout)}")
            ]
            self._reply(out, 200, req.cseq, session)
            if self.cache_mode == "HIT":
                self._local_play_pause(play, out, reply=False)
            else:
                self._split_play_pause(play, out, reply=False)
            return True
        headers = play.headers
        for name in _HOP_REQUEST:
            headers = headers.without(name)
        assert self.target is not None and self.origin_session is not None
        headers = headers.add("Session", self.origin_session).add("Via", VIA)
        uri = self.target.to_origin(play.uri)
        self._send_origin(
            out, "PLAY", uri, headers, b"", _Pending(request=play, purpose="deferred-play")
        )
        return False

    def _deferred_play_done(self, resp: Response, pending: _Pending, out: list[Command]) -> None:
        """The origin's answer to a PLAY the client already had our answer to."""
        if resp.status >= 300:
            out.append(Log("WARNING", f"{self.client}: origin refused PLAY: {resp.status}"))
            self._fail_origin(out, 502, f"origin refused PLAY ({resp.status})")
            return
        if self.cache_mode == "MISS" and pending.request is not None:
            self._begin_fill(pending.request, resp, out)
        elif self.cache_mode == "FEED" and self.feed is None:
            self._start_feed(out)

    def _may_cache_authenticated(self, url: str) -> bool:
        if self.ctx.hook is not None:
            verdict = self.ctx.hook.mediacache_cache_allowed(
                format_name=self.ctx.format_name, url=url, authenticated=True
            )
            if verdict is not None:
                return bool(verdict)
        return self.dialect.cache_authenticated

    def _start_hit(self, key: CacheKey, source: Any, out: list[Command]) -> None:
        """Serve this session from ``source`` (an object, or a fill in progress)."""
        meta = source.meta
        described = self.described
        assert described is not None
        stored = {relative_control(described.base, t.control): t for t in meta.tracks}
        pairs: list[tuple[Track, TrackMeta] | None] = [None] * len(meta.tracks)
        for track, control in zip(self.tracks, self.setup_controls, strict=False):
            tmeta = stored.get(relative_control(described.base, control))
            if tmeta is None:
                return self._pass("stored tracks differ", out)
            pairs[tmeta.track_id] = (track, tmeta)
        if any(p is None for p in pairs):
            return self._pass("stored tracks differ", out)
        self.replay = self.dialect.make_replay(source, pairs, self.ctx.clock)  # type: ignore[arg-type]
        self.cache_mode = "HIT"
        self.cache_key = key
        assert self.ctx.cache is not None
        self.ctx.cache.join(key)
        if self.stats is not None:
            self.stats.result = "HIT"
        self.duration = meta.duration
        return None

    def _local_play_pause(self, req: Request, out: list[Command], *, reply: bool = True) -> None:
        """PLAY/PAUSE of a HIT session, from its replay (``reply``: False when the client had
        its answer already, see :meth:`_decide_deferred`)."""
        replay = self.replay
        assert replay is not None
        session = [
            ("Session", f"{self.session_id};timeout={int(self.ctx.settings.session_timeout)}")
        ]
        if req.method == "PAUSE":
            replay.pause()
            self.replay_playing = False
            out.append(StopPlayout(replay))
            self._reply(out, 200, req.cseq, session)
            return
        try:
            npt = (
                parse_range(req.headers.get("Range") or "").start
                if "Range" in req.headers
                else None
            )
        except ProtocolError as exc:
            self._reply(out, exc.status_hint, req.cseq)
            return
        duration = self.duration
        if npt is not None and duration is not None and npt > duration:
            self._reply(out, 457, req.cseq)
            return
        start, infos = replay.play(self.ctx.monotonic(), npt)
        end = f"{duration:.3f}" if duration is not None else ""
        rtp_info = ", ".join(
            RtpInfo(url=track.url, seq=seq, rtptime=rtptime).build()
            for track, (seq, rtptime) in zip(self._tracks_by_replay_order(), infos, strict=True)
        )
        headers = [*session, ("Range", f"npt={start:.3f}-{end}"), ("RTP-Info", rtp_info)]
        if reply:
            self._reply(out, 200, req.cseq, headers)
        if self.stats is not None and self.stats.status < 300:
            self.stats.status = 200
        self.replay_playing = True
        out.append(StartPlayout(replay))

    def _tracks_by_replay_order(self) -> list[Track]:
        """Client tracks ordered like the replay's (stored) tracks."""
        replay = self.replay
        assert replay is not None
        return [next(t for t in self.tracks if t.rtp_sink is sink) for sink in replay.sinks]

    def _begin_fill(self, req: Request, resp: Response, out: list[Command]) -> None:
        """The origin accepted the PLAY of a miss: open the fill and record from now on."""
        cache, described, key = self.ctx.cache, self.described, self.cache_key
        if self.recorder is not None:
            self.recorder.resume(self.ctx.monotonic())
            return
        assert cache is not None and described is not None and key is not None
        assert described.description is not None
        sd = described.description
        try:
            infos = (
                parse_rtp_info(resp.headers.get("RTP-Info") or "")
                if "RTP-Info" in resp.headers
                else []
            )
            npt = parse_range(resp.headers.get("Range") or "npt=0-").start or 0.0
        except ProtocolError:
            infos, npt = [], 0.0
        media_indexes = [self._media_index(sd, described.base, c) for c in self.setup_controls]
        metas = track_metas(sd, self.setup_controls, media_indexes, infos, npt)
        try:
            fill: Fill = cache.store.begin_fill(
                key,
                description=described.sdp,
                tracks=metas,
                validators=described.validators,
                duration=duration_of(sd),
                format_data={"content-base": described.base},
            )
        except CacheError as exc:
            self._pass(f"fill not started: {exc}", out)
            return
        self.recorder = self.dialect.make_recorder(fill, self.tracks, self.ctx.monotonic())
        out.append(Log("INFO", f"{self.client}: cache fill of {key.url} [{key.variant}] started"))
        out.append(SetTimer("fill-watchdog", FILL_IDLE_LIMIT))

    @staticmethod
    def _media_index(sd: SessionDescription, base: str, control: str) -> int:
        for i, media in enumerate(sd.media):
            resolved = resolve_url(base, media.control) if media.control else ""
            if resolved and resolved.rstrip("/") == control.rstrip("/"):
                return i
        return 0

    def _record(self, frame: InterleavedFrame, out: list[Command]) -> None:
        recorder = self.recorder
        assert recorder is not None
        if frame.channel not in recorder.channels:
            return
        ended = recorder.on_frame(frame.channel, frame.payload, self.ctx.monotonic())
        if recorder.failed:
            self._abort_fill(out, recorder.failed)
        elif ended:
            self._commit_fill(out)

    def _commit_fill(self, out: list[Command]) -> None:
        recorder = self.recorder
        assert recorder is not None
        self.recorder = None
        out.append(CancelTimer("fill-watchdog"))
        try:
            obj = recorder.fill.commit()
        except (CacheError, OSError) as exc:
            out.append(Log("ERROR", f"{self.client}: cache fill not stored: {exc}"))
        else:
            out.append(
                Log(
                    "INFO",
                    f"{self.client}: cached {obj.meta.key.url} [{obj.meta.key.variant}]: "
                    f"{obj.meta.packet_count} packets, {obj.meta.size} bytes",
                )
            )
        if self.background:
            self._shutdown(out, "background fill complete", notify_origin=True)

    def _abort_fill(self, out: list[Command], why: str) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        self.recorder = None
        out.append(CancelTimer("fill-watchdog"))
        recorder.fill.abort(why)
        out.append(Log("INFO", f"{self.client}: cache fill aborted: {why}"))
        if self.background:
            self._shutdown(out, f"background fill aborted: {why}", notify_origin=True)

    def _client_gone(self, out: list[Command]) -> None:
        """The client left. A fill in progress may go on in the background (see CacheConfig),
        and a live feed goes on until a joiner took it over, or, with none, while it has
        viewers and for the splitter's linger. Its origin bytes from now on go to one more
        record, written when the session ends (as a background fill's)."""
        feed, splitter = self.feed, self.ctx.splitter
        if (
            feed is not None
            and self.feed_role == "owner"
            and splitter is not None
            and self.origin_state == "open"
            and (feed.viewers - {self} or splitter.linger > 0)
        ):
            feed.leave(self, self._feed_sinks())
            self.background = True
            feed.idle_since = None
            for track in self.tracks:  # the fan-outs stay: they feed the other viewers
                for addr in track.watched:
                    out.append(UnwatchDatagrams(addr))
                track.watched = ()
            out.append(
                Log(
                    "INFO",
                    f"{self.client}: left; its live feed goes on ({len(feed.viewers)} viewers)",
                )
            )
            client_stats = self.stats
            self._emit_record(out, "client closed")
            self._begin_background_stats(client_stats)
            out.append(CancelTimer("client-timeout"))
            out.append(SetTimer("feed-linger", 1.0))
            splitter.hand_over(feed)
            return
        recorder, cache = self.recorder, self.ctx.cache
        if recorder is not None and cache is not None and self.origin_state == "open":
            readers = cache.readers.get(recorder.fill.key, 0)
            duration = recorder.fill.meta.duration or 0.0
            progress = recorder.received_time / duration if duration else 0.0
            if readers > 0 or progress >= cache.settings.background_fill:
                self.background = True
                out.append(
                    Log(
                        "INFO",
                        f"{self.client}: left during the fill; it goes on "
                        f"({readers} readers, {progress:.0%} received)",
                    )
                )
                self._release_tracks(out)
                client_stats = self.stats
                self._emit_record(out, "client closed")
                self._begin_background_stats(client_stats)
                out.append(CancelTimer("client-timeout"))
                return
        self._shutdown(out, "client closed", notify_origin=True)

    def _begin_background_stats(self, client: _SessionStats | None) -> None:
        """The client's record is written; the origin bytes of the fill that goes on without
        it are counted for one more record, written when the fill ends (committed or aborted):
        same URL, variant and result (MISS), no client bytes, reason how the fill ended. So
        every origin media byte is in some record and savings follow from the log alone."""
        if client is None:
            return
        self.stats = _SessionStats(
            start=self.ctx.clock(),
            url=client.url,
            status=client.status,
            user_agent=client.user_agent,
            result=client.result,
            variant=client.variant,
        )

    # -- live splitting ---------------------------------------------------------------------

    @property
    def backpressure(self) -> bool:
        """May a slow client pause our origin connection? Not when it feeds other viewers."""
        return self.feed_role != "owner"

    def _keyed(self, own: str) -> str:
        """The variant key for the dialect's own variant ``own``: a plugin's
        ``mediacache_cache_variant`` may replace it (asked once per variant the client picks)."""
        if self.ctx.hook is None or self.described is None:
            return own
        hooked = self.ctx.hook.mediacache_cache_variant(
            format_name=self.ctx.format_name, url=self.described.url, variant=own
        )
        return own if hooked is None else str(hooked)

    def _relative_controls(self) -> list[str]:
        described = self.described
        assert described is not None
        return [relative_control(described.base, c) for c in self.setup_controls]

    def _feed_sinks(self) -> dict[str, tuple[Sink, Sink]]:
        return {
            control: (track.rtp_sink, track.rtcp_sink)
            for control, track in zip(self._relative_controls(), self.tracks, strict=False)
        }

    def _decide_split(self, variant: str) -> None:
        """A live stream: join its feed (SPLIT), start it (FEED: our PLAY goes to the origin),
        or wait while another viewer's PLAY starts it (WAIT, see :meth:`_wait_for_feed`)."""
        described, splitter = self.described, self.ctx.splitter
        assert described is not None and splitter is not None
        key = (self.ctx.format_name, described.url, variant)
        if self.stats is not None:
            self.stats.variant = variant
        self.feed_key = key
        feed = splitter.get(key)
        if feed is not None:
            if set(self._relative_controls()) <= set(feed.tracks):
                self.feed, self.feed_role, self.cache_mode = feed, "joiner", "SPLIT"
                feed.posts[self] = self.ctx.post
                if self.stats is not None:
                    self.stats.result = "SPLIT"
                if feed.orphaned:  # its owner's client is gone: we may carry it instead
                    splitter.hand_over(feed)
            else:  # a feed of other tracks under the same key (a hook's variant): relayed
                self.cache_mode = "PASS"
            return
        self.cache_mode = "FEED" if splitter.claim(key, self, self.ctx.post) else "WAIT"

    def _wait_for_feed(self, req: Request, resume: str | None, out: list[Command]) -> None:
        """Another viewer's PLAY is starting the feed we want: hold ``req`` as if it were at
        the origin (nothing else goes there meanwhile) until a ``feed-start`` notice (see
        :meth:`_feed_wait_over`), for at most the owner's own bound plus a grace."""
        self.feed_wait = (req, resume)
        self.in_flight = req
        bound = self.ctx.settings.origin_response_timeout + FEED_WAIT_GRACE
        out.append(SetTimer("feed-wait", bound))
        key = self.feed_key
        assert key is not None
        out.append(Log("DEBUG", f"{self.client}: waits for the live feed of {key[1]} to start"))

    def _feed_wait_over(self, out: list[Command]) -> None:
        """The feed we waited for started or failed: the held request takes the usual path
        again, in the cache mode it had, so we join, start the feed ourselves, or wait on."""
        if self.feed_wait is None:
            return
        req, resume = self.feed_wait
        self.feed_wait = None
        out.append(CancelTimer("feed-wait"))
        self.in_flight = None
        self.cache_mode = resume
        self.queue.appendleft(req)
        self._pump(out)

    def _feed_wait_timeout(self, out: list[Command]) -> None:
        """Waited too long for another viewer's feed (it neither started nor failed): end
        this session with a clean 504 rather than open a second upstream."""
        if self.feed_wait is None:
            return
        self.feed_wait = None
        why = "the live feed did not start in time"
        out.append(Log("WARNING", f"{self.client}: {why}"))
        held = [self.in_flight] if self.in_flight is not None else []
        self.in_flight = None
        for req in [*held, *self.queue]:
            self._reply(out, 504, req.cseq, [("X-Mediacache-Error", why)])
        self.queue.clear()
        self._shutdown(out, why, notify_origin=True, status=504)

    def _feed_start_failed(self, out: list[Command], status: int) -> None:
        """The origin refused our PLAY: the feed did not start. The viewers waiting for it
        decide again (one of them starts it); a PLAY our client retries decides again too."""
        splitter, key = self.ctx.splitter, self.feed_key
        if splitter is not None and key is not None:
            splitter.release(key, self)
        self.cache_mode = None
        out.append(Log("INFO", f"{self.client}: live feed not started: origin answered {status}"))

    def _start_feed(self, out: list[Command]) -> None:
        """Our PLAY was accepted: our origin session becomes the feed of this live stream."""
        splitter, key = self.ctx.splitter, self.feed_key
        assert splitter is not None and key is not None
        if splitter.get(key) is not None:  # a feed of the key exists already: stay a relay
            splitter.release(key, self)
            self.cache_mode = "PASS"
            return
        controls = self._relative_controls()
        feed = splitter.start(key, self, controls)
        for control, track in zip(controls, self.tracks, strict=False):
            fan = feed.tracks[control]
            rtp_ch, rtcp_ch = track.origin_channels
            self.channel_sinks[rtp_ch] = fan.rtp
            if rtcp_ch != rtp_ch:  # one channel (Real's RDT): no RTCP channel
                self.channel_sinks[rtcp_ch] = fan.rtcp
        feed.join(self, self._feed_sinks())
        feed.detach, feed.owner_post = self._feed_detached, self.ctx.post
        self.feed, self.feed_role = feed, "owner"
        self.feed_rtcp = {track.origin_channels[1]: False for track in self.tracks}
        out.append(Log("INFO", f"{self.client}: live feed of {key[1]} [{key[2]}] started"))

    def _split_play_pause(self, req: Request, out: list[Command], *, reply: bool = True) -> None:
        """PLAY/PAUSE of a viewer of a live feed (``reply``: False when the client had its
        answer already, see :meth:`_decide_deferred`)."""
        feed = self.feed
        session = [
            ("Session", f"{self.session_id};timeout={int(self.ctx.settings.session_timeout)}")
        ]
        if feed is None:
            self._reply(out, 503, req.cseq, reason="Service Unavailable (live feed ended)")
            return
        if req.method == "PAUSE":
            feed.leave(self, self._feed_sinks())
            if self.feed_role == "owner":
                feed.viewers.add(self)  # a paused owner still holds the feed
            self._reply(out, 200, req.cseq, session)
            return
        headers = [*session, ("Range", "npt=now-")]
        if self.dialect.rtp_info:
            infos = []
            for control, track in zip(self._relative_controls(), self.tracks, strict=False):
                now = feed.rtp_info(control)
                seq, rtptime = now if now is not None else (None, None)
                infos.append(RtpInfo(url=track.url, seq=seq, rtptime=rtptime).build())
            headers.append(("RTP-Info", ", ".join(infos)))
        feed.join(self, self._feed_sinks())
        if reply:
            self._reply(out, 200, req.cseq, headers)
        if self.stats is not None and self.stats.status < 300:
            self.stats.status = 200

    def _feed_rtcp(self, frame: InterleavedFrame, out: list[Command]) -> None:
        """The end of every track (RTCP BYE): the origin ended the stream, the feed is over."""
        if not self.dialect.ends_stream(frame.payload):
            return
        self.feed_rtcp[frame.channel] = True
        if all(self.feed_rtcp.values()):
            self._stop_feed_use(out, "the origin ended the stream")
            self.feed_role = None
            if self.background:
                self._shutdown(out, "live feed ended by the origin", notify_origin=True)

    def _reconnect_later(self, out: list[Command], why: str) -> None:
        """The feed's origin dropped: retry with backoff, or end the viewers cleanly."""
        splitter = self.ctx.splitter
        assert splitter is not None
        now = self.ctx.monotonic()
        if self.reconnecting is None:
            self.reconnecting = now
            self.reconnect_attempt = 0
            out.append(
                Log("WARNING", f"{self.client}: live feed lost its origin ({why}); reconnecting")
            )
        left = splitter.reconnect_timeout - (now - self.reconnecting)
        if left <= 0:
            self.reconnecting = None
            self._stop_feed_use(out, f"live feed lost: {why}")  # the joiners' records say why
            if self.in_flight is not None or self.queue:
                self._fail_origin(out, 502, why)
            self._shutdown(out, f"live feed lost: {why}", notify_origin=False, status=502)
            return
        delay = min(0.5 * 2**self.reconnect_attempt, 4.0, left)  # the last try at the timeout
        self.reconnect_attempt += 1
        self.pending.clear()
        if self.taking_over:  # our take-over PLAY went with the connection: the next joiner
            self.taking_over = False
            if self.feed is not None:
                splitter.take_over_failed(self.feed, self)
        out.append(CancelTimer("origin-response"))
        out.append(SetTimer("feed-reconnect", delay))

    def _reconnect_setup(self, index: int, out: list[Command]) -> None:
        """Set the tracks up again on the new origin connection, on the same channels, so
        the fan-outs stay wired; then PLAY."""
        assert self.target is not None
        self.origin_reader = RtspReader(max_body=4 * 1024 * 1024)
        headers = Headers([("Via", VIA)])
        if index < len(self.setup_controls):
            track = self.tracks[index] if index < len(self.tracks) else None
            channels = track.origin_channels if track else (2 * index, 2 * index + 1)
            spec = dataclasses.replace(self.dialect.origin_transport(index), interleaved=channels)
            headers = headers.add("Transport", spec.build())
            if index and self.origin_session:
                headers = headers.add("Session", self.origin_session)
            url = self.setup_controls[index]
            headers = self.dialect.request_to_origin(Request("SETUP", url, headers), headers)
            pending = _Pending(None, "reconnect", track_index=index)
            self._send_origin(out, "SETUP", self.setup_controls[index], headers, b"", pending)
            return
        if self.feed_role != "owner":  # an accounting session: set up, no media asked for
            self._reconnect_done(out)
            return
        if self.origin_session:
            headers = headers.add("Session", self.origin_session)
        base = self.described.base if self.described else str(self.target.origin)
        self._send_origin(out, "PLAY", base, headers, b"", _Pending(None, "reconnect"))

    def _reconnect_step(self, resp: Response, pending: _Pending, out: list[Command]) -> None:
        if resp.status >= 300:
            if self.origin is not None:
                out.append(CloseConnection(self.origin))
            self.origin_state = "closed"
            self._reconnect_later(out, f"origin answered {resp.status} while reconnecting")
            return
        if pending.track_index is not None:
            self._reconnect_setup(pending.track_index + 1, out)
            return
        self._reconnect_done(out)

    def _reconnect_done(self, out: list[Command]) -> None:
        self.reconnecting = None
        self.feed_rtcp = dict.fromkeys(self.feed_rtcp, False)
        role = "live feed" if self.feed_role == "owner" else "accounting session"
        out.append(Log("INFO", f"{self.client}: {role} reconnected to its origin"))
        self._pump(out)

    def _feed_linger(self, out: list[Command]) -> None:
        feed, splitter = self.feed, self.ctx.splitter
        if feed is None or splitter is None:
            return
        if feed.linger_over(self.ctx.monotonic(), splitter.linger):
            self._shutdown(out, "live feed released (no viewers)", notify_origin=True)
            return
        out.append(SetTimer("feed-linger", 1.0))

    def _take_over(self, out: list[Command]) -> None:
        """The feed's owner left (``feed-handover``): PLAY on our accounting session, which is
        SETUP on the feed's tracks, so that it carries the feed (see core/splitter.py). Until
        its 200 our origin's packets go nowhere (the viewers get the owner's)."""
        feed, splitter = self.feed, self.ctx.splitter
        if feed is None or splitter is None or feed.successor is not self:
            return
        held = [self.in_flight] if self.in_flight is not None else []
        if (
            self.feed_role != "joiner"
            or self.origin_state != "open"
            or self.origin_session is None
            or self.reconnecting is not None
            or self.described is None
            or self.closed
            or any(r.method == "TEARDOWN" for r in [*held, *self.queue])  # leaving: not us
        ):
            splitter.take_over_failed(feed, self)
            return
        self.taking_over = True
        for track in self.tracks:
            for channel in track.origin_channels:
                self.channel_sinks.pop(channel, None)
        headers = Headers([("Session", self.origin_session), ("Via", VIA)])
        pending = _Pending(None, "take-over")
        self._send_origin(out, "PLAY", self.described.base, headers, b"", pending)
        out.append(Log("INFO", f"{self.client}: takes the live feed of {feed.key[1]} over"))

    def _take_over_done(self, resp: Response, out: list[Command]) -> None:
        """The origin answered our take-over PLAY: on a 200 we own the feed (the splitter
        switches at once), our origin channels feed the fan-outs through one
        :class:`~mediacache.splitter.Continuity` per track (or the dialect's
        ``feed_continuity``); otherwise the next joiner is asked."""
        self.taking_over = False
        self._take_over_answered(resp, out)
        self._pump(out)  # the client's requests that waited: now an owner's, or a joiner's

    def _take_over_answered(self, resp: Response, out: list[Command]) -> None:
        feed, splitter = self.feed, self.ctx.splitter
        if feed is None or splitter is None or feed.successor is not self:
            return
        if resp.status >= 300 or self.feed_role != "joiner":
            for track in self.tracks:
                rtp_ch, rtcp_ch = track.origin_channels
                self.channel_sinks[rtcp_ch] = track.rtcp_sink
                self.channel_sinks[rtp_ch] = track.rtp_sink
            out.append(
                Log("WARNING", f"{self.client}: live feed not taken over: origin {resp.status}")
            )
            splitter.take_over_failed(feed, self)
            return
        splitter.take_over(feed, self, self._feed_detached, self.ctx.post)
        now = self.ctx.monotonic()
        described = self.described
        sd = described.description if described is not None else None
        wired = zip(self._relative_controls(), self.setup_controls, self.tracks, strict=False)
        for control, origin_url, track in wired:
            fan = feed.tracks[control]
            rtp_ch, rtcp_ch = track.origin_channels
            route = self._route_continued(rtp_ch, rtcp_ch)
            sinks = self.dialect.feed_continuity(fan, route)
            if sinks is not None:  # the dialect's own (Real: RDT renumbered)
                self._route_feed(*sinks, rtp_ch, rtcp_ch)
                continue
            if rtcp_ch == rtp_ch or not self.dialect.rtp_info or sd is None:
                self._route_feed(fan.rtp, fan.rtcp, rtp_ch, rtcp_ch)  # not RTP: as it comes
                continue
            assert described is not None
            index = self._media_index(sd, described.base, origin_url)
            rate = clock_rate_of(sd, index)[0] if index < len(sd.media) else 90000
            continuity = Continuity(fan, rate, now, self.ctx.monotonic, route)
            self._route_feed(continuity.rtp, continuity.rtcp, rtp_ch, rtcp_ch)
        self.feed_role = "owner"
        self.feed_rtcp = {track.origin_channels[1]: False for track in self.tracks}
        out.append(Log("INFO", f"{self.client}: took the live feed of {feed.key[1]} over"))

    def _route_feed(self, rtp: Sink, rtcp: Sink, rtp_ch: int, rtcp_ch: int) -> None:
        self.channel_sinks[rtp_ch] = rtp
        if rtcp_ch != rtp_ch:
            self.channel_sinks[rtcp_ch] = rtcp

    def _route_continued(self, rtp_ch: int, rtcp_ch: int) -> Any:
        """What a :class:`Continuity` calls to put the fan-outs straight on our channels."""

        def route(rtp: Sink, rtcp: Sink) -> None:
            if self.feed_role == "owner":
                self._route_feed(rtp, rtcp, rtp_ch, rtcp_ch)

        return route

    def _feed_detached(self) -> None:
        """A joiner took our feed over (called by the splitter, in its session's turn): our
        origin's packets reach no viewer from now on; a ``feed-handed-over`` notice follows."""
        self.channel_sinks.clear()
        self.feed, self.feed_role, self.feed_rtcp = None, None, {}

    def _stop_feed_use(self, out: list[Command], reason: str) -> None:
        feed, splitter = self.feed, self.ctx.splitter
        if splitter is not None and self.feed_key is not None:
            splitter.release(self.feed_key, self)  # a feed we were starting, or waiting for
        if feed is None:
            return
        self.feed = None
        if self.feed_role == "joiner":
            feed.leave(self, self._feed_sinks() if self.described else {})
            feed.posts.pop(self, None)
            if splitter is not None:
                splitter.take_over_failed(feed, self)  # if we were asked: the next one is
            return
        if splitter is not None:
            splitter.end(feed, reason)
        out.append(Log("INFO", f"{self.client}: live feed of {feed.key[1]} ended: {reason}"))

    def _stop_cache_use(self, out: list[Command]) -> None:
        self._stop_feed_use(out, "the feeding session ended")
        if self.replay is not None:
            out.append(StopPlayout(self.replay))
            self.replay = None
            if self.ctx.cache is not None and self.cache_key is not None:
                self.ctx.cache.leave(self.cache_key)
        if self.recorder is not None and not self.background:
            self._abort_fill(out, "the session ended before the clip did")

    # -- timers ---------------------------------------------------------------------------

    def _timer(self, name: str, out: list[Command]) -> None:
        if name == "auth-timeout" and self.auth_check is not None:
            self.auth_check.timed_out()
            self._auth_done_if_answered(out)
            return
        if name == "client-timeout":
            out.append(
                Log(
                    "INFO",
                    f"{self.client}: timed out after "
                    f"{self.ctx.settings.session_timeout:g}s of silence",
                )
            )
            self._shutdown(out, "timeout", notify_origin=True, status=408)
        elif name == "origin-keepalive":
            self._origin_keepalive(out)
        elif name == "feed-linger":
            self._feed_linger(out)
        elif name == "feed-wait":
            self._feed_wait_timeout(out)
        elif name == "feed-reconnect" and self.reconnecting is not None:
            self.origin_session = None
            self._open_origin(out)
        elif name == "fill-watchdog" and self.recorder is not None:
            recorder = self.recorder
            now = self.ctx.monotonic() - recorder.started - recorder.paused_total
            if recorder.paused_at is None and now - recorder.received_time > FILL_IDLE_LIMIT:
                self._abort_fill(out, "the origin stopped sending")
            else:
                out.append(SetTimer("fill-watchdog", FILL_IDLE_LIMIT))
        elif name == "origin-response" and self.pending:
            out.append(Log("WARNING", f"{self.client}: origin did not answer in time"))
            self._fail_origin(out, 504, "origin did not answer in time")

    def _origin_keepalive(self, out: list[Command]) -> None:
        interval = max(1.0, self.origin_timeout / 2)
        if self.origin_state != "open" or self.origin_session is None:
            return
        idle = self.ctx.clock() - self.last_origin_send
        if idle >= interval * 0.9:
            method = "GET_PARAMETER" if "GET_PARAMETER" in self.origin_public else "OPTIONS"
            assert self.target is not None
            headers = Headers([("Session", self.origin_session), ("Via", VIA)])
            uri = str(self.target.origin)
            self._send_origin(out, method, uri, headers, b"", _Pending(None, "keepalive"))
            idle = 0.0
        out.append(SetTimer("origin-keepalive", max(1.0, interval - idle)))

    # -- ending ---------------------------------------------------------------------------

    def _begin_stats(self, req: Request) -> None:
        self.stats = _SessionStats(
            start=self.ctx.clock(),
            url=_strip_credentials(req.uri),
            user_agent=req.headers.get("User-Agent") or "",
        )

    def _end_session(self, out: list[Command], reason: str) -> None:
        """The RTSP session ended (TEARDOWN); the connection may go on with a new one."""
        self._stop_cache_use(out)
        self.cache_mode = None
        self.cache_key = None
        self.setup_controls = []
        self._release_tracks(out)
        self._emit_record(out, reason)
        self.session_id = None
        self.origin_session = None
        out.append(CancelTimer("origin-keepalive"))

    def _release_tracks(self, out: list[Command]) -> None:
        for track in self.tracks:
            for addr in track.watched:
                out.append(UnwatchDatagrams(addr))
        self.tracks.clear()
        self.channel_sinks.clear()
        self.client_to_origin_channel.clear()
        self.rtcp_to_origin.clear()

    def _emit_record(
        self, out: list[Command], reason: str, status: int | None = None, result: str = "PASS"
    ) -> None:
        stats = self.stats
        if stats is None:
            return
        self.stats = None
        sent = sum(s.bytes_sent for s in stats.sinks)
        record = AccessRecord(
            start=stats.start,
            end=self.ctx.clock(),
            client=f"{self.client.peer[0]}:{self.client.peer[1]}",
            format=self.ctx.format_name,
            url=stats.url,
            status=stats.status or status or 0,
            result=(result if result != "PASS" else stats.result),  # type: ignore[arg-type]
            variant=stats.variant,
            transport=stats.transport,
            bytes_to_client=sent,
            origin_bytes=stats.origin_bytes,
            session=self.session_id or "",
            reason=stats.reason or reason,
            user_agent=stats.user_agent,
        )
        out.append(EmitRecord(record))

    def _shutdown(
        self,
        out: list[Command],
        reason: str,
        *,
        notify_origin: bool,
        status: int | None = None,
        result: str = "PASS",
        drain: bool = False,
    ) -> None:
        """Close everything: origin session (TEARDOWN if it still listens), client, record."""
        if self.closed:
            return
        if (
            notify_origin
            and self.origin is not None
            and self.origin_state == "open"
            and self.origin_session
            and self.target is not None
        ):
            headers = Headers([("Session", self.origin_session), ("Via", VIA)])
            self._send_origin(
                out,
                "TEARDOWN",
                str(self.target.origin),
                headers,
                b"",
                _Pending(None, "teardown"),
            )
        self.background = False
        self._stop_cache_use(out)
        self._release_tracks(out)
        self._emit_record(out, reason, status, result)
        self.closed = True
        for name in (
            "client-timeout",
            "origin-keepalive",
            "origin-response",
            "fill-watchdog",
            "feed-linger",
            "feed-reconnect",
            "auth-timeout",
        ):
            out.append(CancelTimer(name))
        if self.origin is not None and self.origin_state in ("open", "connecting"):
            out.append(CloseConnection(self.origin))
        if self.auth_conn is not None:
            out.append(CloseConnection(self.auth_conn))
            self.auth_conn = None
        self.origin_state = "closed"
        out.append(CloseConnection(self.client, drain=drain))

    # -- replies --------------------------------------------------------------------------

    def _reply(
        self,
        out: list[Command],
        status: int,
        cseq: int | None,
        headers: list[tuple[str, str]] | Headers = (),  # type: ignore[assignment]
        body: bytes = b"",
        reason: str | None = None,
    ) -> None:
        pairs = [("CSeq", str(cseq))] if cseq is not None else []
        pairs.extend(headers)
        if not any(k.lower() == "server" for k, _ in pairs):
            pairs.append(("Server", "mediacache"))
        resp = Response(status, reason or REASONS.get(status, "Unknown"), Headers(pairs), body)
        if self.stats is not None and status >= 300 and self.stats.status < 300:
            self.stats.status = status
        out.append(SendData(self.client, build_response(resp)))


def _first_ts(source: Any, track_index: int) -> int:
    for i in range(min(available(source), 2000)):
        packet = source.packet(i)
        if packet.track == track_index:
            return rtp_timestamp(packet.payload)
    return 0


def _strip_credentials(uri: str) -> str:
    try:
        return str(parse_url(uri).without_credentials())
    except ProtocolError:
        return uri


def _is_hex(value: str) -> bool:
    try:
        int(value, 16)
    except ValueError:
        return False
    return len(value) <= 8
