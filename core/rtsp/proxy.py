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
import secrets
from collections import deque
from dataclasses import dataclass, field

from mediacache.errors import ProtocolError
from mediacache.logs import AccessRecord
from mediacache.rtsp.headers import (
    TransportSpec,
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
from mediacache.rtsp.sdp import build_sdp, parse_sdp, rewrite_controls
from mediacache.rtsp.url import RtspUrl, parse_url, rebase_url
from mediacache.sansio.commands import (
    CancelTimer,
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    OpenConnection,
    SendData,
    SetTimer,
    UnwatchDatagrams,
    WatchDatagrams,
)
from mediacache.sansio.connection import Connection
from mediacache.sansio.events import (
    ConnectionClosed,
    DatagramReceived,
    DataReceived,
    Event,
    OpenCompleted,
    Start,
    TimerFired,
)
from mediacache.sansio.layer import SessionContext, Sink

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

# Headers that describe one hop, rebuilt by us on each side rather than copied.
_HOP_REQUEST = ("CSeq", "Session", "Content-Length", "Transport", "Connection", "Proxy-Require")
_HOP_RESPONSE = ("CSeq", "Session", "Content-Length", "Transport", "Connection")


class RtspDialect:
    """The parts of RTSP that differ per format. QuickTime uses this class as it is."""

    origin_tcp_protocol = "RTP/AVP/TCP"
    client_udp_protocol = "RTP/AVP"
    client_tcp_protocol = "RTP/AVP/TCP"

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

    def origin_transport(self, track_index: int) -> TransportSpec:
        """What we ask the origin for: always TCP, interleaved on our control connection."""
        return TransportSpec(
            protocol=self.origin_tcp_protocol,
            unicast=True,
            interleaved=(2 * track_index, 2 * track_index + 1),
        )


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
class _SessionStats:
    start: float
    url: str = ""
    status: int = 0
    transport: str = ""
    origin_bytes: int = 0
    user_agent: str = ""
    reason: str = ""
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
        self.closed = False
        self.last_origin_send = 0.0

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
        elif isinstance(event, DatagramReceived):
            self._datagram(event, out)
        elif isinstance(event, OpenCompleted):
            self._origin_opened(event, out)
        elif isinstance(event, ConnectionClosed):
            if event.conn is self.client:
                self._shutdown(out, "client closed", notify_origin=True)
            elif event.conn is self.origin:
                self._origin_closed(event, out)
        elif isinstance(event, TimerFired):
            self._timer(event.name, out)
        elif isinstance(event, Start):
            out.append(SetTimer("client-timeout", self.ctx.settings.session_timeout))
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
            self._reply(out, 200, cseq, [("Public", ", ".join(SUPPORTED_METHODS))])
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
        while self.queue and self.in_flight is None and not self.closed:
            req = self.queue[0]
            if self.target is None:
                error = self._resolve_target(req, out)
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
        hooked = None
        if self.ctx.hook is not None:
            hooked = self.ctx.hook.mediacache_resolve_origin(
                format_name=self.ctx.format_name, url=req.uri
            )
        addressed_to_us = url.effective_port(554) == self.ctx.listen_port
        if hooked:
            origin = parse_url(hooked)
            target = _Target(origin=origin)
        elif addressed_to_us:
            target = self._reverse_target(url)
            if target is None:
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
            self._pump(out)
            return
        self.origin_state = "closed"
        status = 504 if event.timed_out else 502
        host, port = event.conn.peer
        why = f"origin {host}:{port} unreachable: {event.error}"
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
        pending = _Pending(request=req)
        headers = req.headers
        for name in _HOP_REQUEST:
            headers = headers.without(name)
        if req.method == "SETUP":
            spec = self._choose_client_transport(req)
            if spec is None:
                self._reply(out, 461, req.cseq)
                return
            index = len(self.tracks)
            pending.track_index = index
            pending.client_transport = spec
            headers = headers.add("Transport", self.dialect.origin_transport(index).build())
        if (self.origin_session and "Session" in req.headers) or (
            self.origin_session and req.method == "SETUP"
        ):
            headers = headers.add("Session", self.origin_session)
        headers = headers.add("Via", VIA)
        body = req.body
        self.in_flight = req
        self._send_origin(out, req.method, uri, headers, body, pending)

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
            if self.dialect.client_transport_usable(spec):
                return spec
        return None

    # -- origin side ----------------------------------------------------------------------

    def _origin_data(self, data: bytes, out: list[Command]) -> None:
        if self.stats is not None:
            self.stats.origin_bytes += len(data)
        self.origin_reader.receive_data(data)
        sinks = self.channel_sinks
        try:
            while (ev := self.origin_reader.next_event()) is not None:
                if type(ev) is InterleavedFrame:
                    sink = sinks.get(ev.channel)
                    if sink is not None:
                        sink.send(ev.payload)
                elif isinstance(ev, Response):
                    self._origin_response(ev, out)
                    if self.closed:
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
        extra: list[tuple[str, str]] = []
        body = resp.body
        for name in ("Content-Base", "Content-Location"):
            value = headers.get(name)
            if value:
                headers = headers.with_(name, self.target.to_client(value))
        if "RTP-Info" in headers:
            headers = headers.with_("RTP-Info", self._rewrite_rtp_info(headers.get("RTP-Info")))
        ok = 200 <= resp.status < 300
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
        host = self.client.peer[0]
        plane = self.ctx.dataplane
        if spec.lower_transport == "TCP":
            used = {c for t in self.tracks if t.client_channels for c in t.client_channels}
            channels = spec.interleaved
            if channels is None or channels[0] in used or channels[1] in used:
                base = 2 * pending.track_index
                while base in used or base + 1 in used:
                    base += 2
                channels = (base, base + 1)
            rtp_sink = plane.interleaved_sink(self.client, channels[0])
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
            rtp_sink = plane.udp_sink((host, rtp_port), rtcp=False)
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
        self.channel_sinks[rtp_ch] = rtp_sink
        self.channel_sinks[rtcp_ch] = rtcp_sink
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

    # -- timers ---------------------------------------------------------------------------

    def _timer(self, name: str, out: list[Command]) -> None:
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
            result=result,  # type: ignore[arg-type]
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
        self._release_tracks(out)
        self._emit_record(out, reason, status, result)
        self.closed = True
        for name in ("client-timeout", "origin-keepalive", "origin-response"):
            out.append(CancelTimer(name))
        if self.origin is not None and self.origin_state in ("open", "connecting"):
            out.append(CloseConnection(self.origin))
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


def _strip_credentials(uri: str) -> str:
    try:
        return str(parse_url(uri).without_credentials())
    except ProtocolError:
        return uri
