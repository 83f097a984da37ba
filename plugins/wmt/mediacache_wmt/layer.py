"""The MMS proxy layer: one player's control connection, relayed to one MMST origin connection.

Theory of operation
-------------------
To the player the proxy is an MMS server; to the origin it is an MMS player speaking MMST (TCP
only: DESIGN.md, "proxy to origin is always TCP"), one origin connection per player, opened
when the player opens a file and closed when it leaves, hit or miss: the accounting connection.

The player's target is only known at OpenFile (:mod:`mediacache_wmt.routing`), so Connect,
FunnelInfo and ConnectFunnel are answered here; at OpenFile the proxy connects to the origin and
runs the same handshake itself (Connect with the origin's ``Host:``, FunnelInfo, ConnectFunnel
``\\\\ip\\TCP\\port``, OpenFile with the player's credentials, if any), then relays the origin's
answer (ReportOpenFile, or a SecurityChallenge). From then on the player's requests are relayed
one at a time (others queue); each reply is rebuilt with our own sequence numbers and the
player's own ``playIncarnation``. :data:`ACCEPTS` is the transition table (what each phase
accepts from the player); anything else is out of order: its error reply (E_UNEXPECTED), then a
lingering close, as the reference origin does::

    START --0x01--> CONNECTED --0x02--> FUNNEL --0x05--> OPENING --origin 0x06--> OPEN
                                                           |  origin 0x1A            ^
                                                           +-> CHALLENGED --0x1A-----+

Everything written on the player's TCP connection (commands and MMST data) goes through one
stream sink, so commands and data packets leave in the order they were produced; MMSU data goes
to the player's UDP port (:class:`~mediacache_wmt.delivery.ClientData`).

The cache decision is made at the first StartPlaying (0x07), when the variant is known: the
streams selected with StreamSwitch (0x33), or every stream of the header. The header itself is
always fetched from the origin (ReadBlock is relayed: a few kB, and the revalidation: its
digest is the object's validator, like an SDP for RTSP).

* **PASS**: live without a splitter, authenticated content (a challenge, or credentials in
  OpenFile), cache disabled, a start past the beginning, another version being filled: relayed.
* **MISS**: StartPlaying relayed; every data packet is relayed and written to a fill (the MMS
  data packet as it came, at its ASF send time). The origin's end of stream (0x1E, ``hr`` 0)
  commits the fill when the packets are complete (LocationIds increasing; every packet of the
  file when every stream was selected); anything else (a pause, a restart, bad input, the
  player leaving before half the clip, an origin silent for 15 s) aborts it.
* **HIT**: the object (or a fill in progress) is served here: 0x05 from us, the packets paced by
  their send times (:class:`~mediacache_wmt.delivery.CacheReplay`), each with the player's packet
  id; no StartPlaying goes to the origin, whose session stays open until the player leaves.
* **SPLIT**: a live broadcast (ReportOpenFile says broadcast, or the route says live) is fed
  once per (URL, variant): the first viewer's origin session carries the data (FEED, logged as
  PASS) and every later viewer joins its fan-out (SPLIT); each keeps its own origin session.
  A player whose StartPlaying comes while the first one's is still at the origin waits for its
  answer (WAIT: held, never sent; see :mod:`mediacache.splitter`), then joins, or starts the
  feed itself if the first one's was refused. When the owner's player leaves, the latest
  joiner sends StartPlaying on its own origin session and takes the feed over (the former
  owner then closes its origin session; see :meth:`MmsProxyLayer._take_over`).

Reconnecting a live feed
------------------------
When the origin connection of a live feed's owner (FEED) closes, or a joiner's (SPLIT)
accounting connection does, the session does not end: a WARNING is logged and the layer
reconnects to the same address (the origin, or the parent), with a backoff of 0.5 s doubling
to 4 s, until ``[split] reconnect_timeout`` (15 s) has passed since the loss. Each attempt
replays the player handshake on the new connection, as an MMS player would::

    lost --feed-reconnect--> connect 0x01 -> funnel_info 0x18 -> funnel 0x02 -> open 0x05
        [-> 0x1A again, with the player's last SecurityResponse, if the origin challenges]
        [-> header 0x15 and its parts (never forwarded), if the session had read the header]
        [-> switch 0x33 with the last accepted selection]
        [-> start 0x07 (FEED only: a joiner's session is for accounting)] -> reconnected

Every step has the ``origin-response`` timeout (capped to the time left); a refusal, a bad or
missing answer, or a failed connect is one failed attempt. Meanwhile the fan-out stays wired,
so the viewers keep their MMS sessions and, once the owner's StartPlaying is accepted again,
the new data packets reach each of them with its own packet id and MMSU counter
(:class:`~mediacache_wmt.delivery.ClientData`; the packets are the new session's, from
the origin's "now", LocationIds included); the player's own commands wait in the queue
(one that was waiting for the old connection's answer is asked again), and an INFO line says
the feed is back. After ``reconnect_timeout`` without success the viewers end as when the
origin ends the broadcast, but with ``hr`` E_CONNECTION_LOST: the owner's player gets 0x1E
(and ffmpeg's end marker) and a 502 record ``live feed lost: ...``; the feed ends, and every
joiner is told (``feed-ended``) and ends the same way. A session whose player has left (a
background owner) always keeps a connection open or opening, so a loss is retried at once
(the session driver releases a session left with neither a player nor an origin connection).

The end of a clip is our own, for HIT and relay alike: 0x1E, then (MMST) a data packet longer
than the ASF packet size, the only thing ffmpeg 5.1 ends an ``mmst`` input on; over MMSU the
0x1E waits a little so it cannot overtake the last datagram (see :mod:`mediacache_wmt.origin`).
The origin's own end marker is dropped.
"""

from __future__ import annotations

import enum
import hashlib
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Final

from mediacache.cache.objects import CacheError, CacheKey, TrackMeta
from mediacache.cache.store import Fill
from mediacache.logs import AccessRecord
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
)
from mediacache.sansio.connection import Connection
from mediacache.sansio.events import (
    ConnectionClosed,
    DataReceived,
    Event,
    Notify,
    OpenCompleted,
    Start,
    TimerFired,
)
from mediacache.sansio.layer import SessionContext, Sink
from mediacache.splitter import FEED_HANDED_OVER, FEED_HANDOVER, FEED_START, FanOut, LiveFeed
from mediacache_wmt.delivery import CacheReplay, ClientData, start_index
from mediacache_wmt.errors import MmsProtocolError
from mediacache_wmt.origin import error_reply
from mediacache_wmt.routing import Target, host_hint, resolve_target
from mediacache_wmt.wire import asf, mms

__all__ = ["ACCEPTS", "MmsProxyLayer", "Phase", "make_layer"]

ORIGIN_HEADER_ID: Final = mms.HEADER_PACKET_ID
ORIGIN_DATA_ID: Final = 5
"""The packet ids we ask the origin for; each player gets its own back (ClientData)."""
UDP_END_DELAY: Final = 0.3
FILL_IDLE_LIMIT: Final = 15.0
"""A fill whose origin sends nothing for this long is aborted (the relay itself goes on)."""
MAX_QUEUED: Final = 16
FEED_WAIT_GRACE: Final = 5.0
"""A player waits for another's starting feed at most this beyond ``origin_response_timeout``
(the bound of the owner's StartPlaying itself, whose failure wakes the waiters before)."""
MAX_COMMAND: Final = 64 * 1024
DEFAULT_AGENT: Final = "NSPlayer/7.0.0.1956; {3300AD50-2C39-46C0-AE0A-70CC0F3B0B1E}"
FEED_TRACK: Final = "asf"
_HR_STATUS: Final = {
    mms.HResult.FILE_NOT_FOUND: 404,
    mms.HResult.ACCESS_DENIED: 401,
    mms.HResult.TOO_MANY_SESSIONS: 453,
    mms.HResult.TIMEOUT: 504,
}


def user_agent_of(subscriber_name: str) -> str:
    """What the access log records of a Connect string: its ``UserAgent:`` part when there is
    one (our prefetcher says ``NSPlayer/...; {GUID}; UserAgent: mediacache-prefetch``, so an
    origin sees a player it knows), else the first part (``NSPlayer/<version>``)."""
    parts = [p.strip() for p in subscriber_name.split(";")]
    for part in parts:
        name, sep, value = part.partition(":")
        if sep and name.strip().lower() == "useragent":
            return value.strip()
    return parts[0]


class Phase(enum.Enum):
    """Where the player is in the [MS-MMSP] sequence."""

    START = "start"
    CONNECTED = "connected"
    FUNNEL = "funnel"
    OPENING = "opening"
    CHALLENGED = "challenged"
    OPEN = "open"
    CLOSED = "closed"


_ANY_TIME: Final = frozenset({mms.Pong, mms.Logging, mms.CloseFile})
ACCEPTS: Final[dict[Phase, frozenset[type[mms.MmsCommand]]]] = {
    Phase.START: frozenset({mms.Connect}),
    Phase.CONNECTED: _ANY_TIME | {mms.FunnelInfo, mms.ConnectFunnel},
    Phase.FUNNEL: _ANY_TIME | {mms.FunnelInfo, mms.OpenFile},
    Phase.OPENING: _ANY_TIME,
    Phase.CHALLENGED: _ANY_TIME | {mms.SecurityResponse},
    Phase.OPEN: _ANY_TIME | {
        mms.FunnelInfo, mms.ReadBlock, mms.StreamSwitch, mms.StartPlaying, mms.StopPlaying,
        mms.StartStriding,
    },
    Phase.CLOSED: frozenset(),
}
"""The transition table: the player's messages each phase accepts; anything else is out of
order (checked when the message's turn comes, after the replies to earlier ones)."""


@dataclass
class _Recording:
    """A MISS session's fill: what the commit checks."""

    fill: Fill
    first_send: int | None = None
    last_location: int = -1
    count: int = 0
    received: float = 0.0


@dataclass
class _Stats:
    start: float
    url: str = ""
    status: int = 0
    transport: str = ""
    origin_bytes: int = 0
    user_agent: str = ""
    reason: str = ""
    result: str = "PASS"
    variant: str = ""
    recorded: bool = False
    background: bool = False
    """The record of a fill going on after its player left: no bytes to the player."""


_NEAR: Final = 10_000
"""LocationIds this close (either way) to the last one the viewers got are taken for the same
broadcast's packet numbers (a shared live source), not another numbering."""


class _Resume:
    """A successor's origin packets, just after its take-over, on their way to the feed's
    fan-out: those the viewers had already (the origin starts a new play at the key frame
    before "now", so its first packets repeat the former owner's, with the same LocationIds
    and bytes) are dropped; from the first new one on, the fan-out is put straight back on
    the layer (``resumed``), so this costs nothing per packet afterwards. A LocationId far
    from the last one sent (an origin numbering each session's packets itself) is no repeat:
    sent as it comes."""

    __slots__ = ("bytes_sent", "dropped", "fan", "packets_sent", "resumed")

    def __init__(self, fan: FanOut, resumed: Callable[[FanOut], None]) -> None:
        self.fan = fan
        self.resumed = resumed
        self.dropped = 0
        self.bytes_sent = 0
        self.packets_sent = 0

    def send(self, frame: bytes) -> None:
        last = self.fan.last
        if len(last) >= 4:
            behind = int.from_bytes(last[:4], "little") - int.from_bytes(frame[:4], "little")
            if behind & 0xFFFFFFFF <= _NEAR:
                self.dropped += 1  # the viewers had it from the former owner
                return
        self.resumed(self.fan)
        self.fan.send(frame)


class MmsProxyLayer:
    """Serves one player's MMS connection; see the module docstring."""

    def __init__(self, ctx: SessionContext) -> None:
        self.ctx = ctx
        self.client = ctx.client
        self.reader = mms.MmsStreamReader(max_command_size=MAX_COMMAND, commands_only=True)
        self.phase = Phase.START
        self.tcp: Sink | None = None
        self.data: ClientData | None = None
        self.seq = 0
        self.t0 = 0.0
        self.subscriber = ""
        self.hint: str | None = None
        self.client_url = ""
        self.target: Target | None = None
        # the origin connection
        self.origin: Connection | None = None
        self.origin_reader = mms.MmsStreamReader(max_command_size=MAX_COMMAND)
        self.origin_state = "none"  # none | connecting | open | closed
        self.via_parent = False  # connected to the [parents] proxy, which gets the origin's URL
        self.origin_seq = 0
        self.purpose: str | None = None  # what the origin's next reply answers
        self.serving: mms.MmsCommand | None = None  # the player's command being served
        self.queue: deque[mms.MmsCommand] = deque()
        self.open_cmd: mms.OpenFile | None = None
        self.opened: mms.ReportOpenFile | None = None
        self.authenticated = False
        self.live = False
        # the header and the selection
        self.header: bytes | None = None
        self.header_info: asf.AsfHeader | None = None
        self.header_parts: bytearray | None = None
        self.header_pid = ORIGIN_HEADER_ID
        self.selected: frozenset[int] | None = None
        self.asked: frozenset[int] | None = None  # a StreamSwitch waiting for its reply
        # playing
        self.mode: str | None = None  # None | PASS | MISS | HIT | SPLIT | FEED
        self.play_cmd: mms.StartPlaying | None = None
        self.from_origin = False  # the origin is sending us data packets
        self.playing = False  # the player is being sent data
        self.pending_end: int | None = None  # hr of a 0x1E waiting for "eos" (MMSU)
        self.cache_key: CacheKey | None = None
        self.validators: dict[str, str] = {}
        self.recorder: _Recording | None = None
        self.fill_tried = False  # a session fills at most once (its first play from the start)
        self.last_origin_data = 0.0
        self.replay: CacheReplay | None = None
        self.feed: LiveFeed | None = None
        self.feed_key: tuple[str, str, str] | None = None
        self.fan: Sink | None = None
        """Where our origin's data packets go: the feed's fan-out (FEED), or a successor's
        :class:`_Resume` in front of it just after a take-over."""
        self.take_over_due = False  # asked to take the feed over while the origin answers us
        # reconnecting a live feed's origin connection (see the module docstring)
        self.reconnecting: float | None = None  # since when (monotonic); None: connected
        self.reconnect_attempt = 0
        self.reconnect_stage = ""  # the handshake step whose answer is awaited
        self.reconnect_why = ""
        self.switch_cmd: mms.StreamSwitch | None = None  # the last selection the origin took
        self.security_cmd: mms.SecurityResponse | None = None  # the player's credentials
        # the session
        self.stats = _Stats(start=ctx.clock())
        self.background = False
        """True while a fill or a live feed goes on after its player left (the driver keeps
        the session while the origin connection is open)."""
        self.client_gone = False
        self.closed = False
        self._flush_armed = False
        self._ping_out = False
        self._last_heard = 0.0
        self._timeout = float(ctx.settings.session_timeout)

    # -- event dispatch -------------------------------------------------------------------

    @property
    def backpressure(self) -> bool:
        """May a slow player pause our origin connection? Not when it feeds other viewers."""
        return self.mode != "FEED"

    def handle(self, event: Event) -> list[Command]:
        if self.closed:
            return []
        out: list[Command] = []
        try:
            self._dispatch(event, out)
        except Exception as exc:  # a bug here must not leak the origin connection or the fill
            detail = "".join(traceback.format_exception(exc)).rstrip()
            out.append(Log("ERROR", f"wmt: {self.client} failed: {detail}"))
            self._shutdown(out, "internal error", status=500)
        data = self.data
        if data is not None and data.holding and not self._flush_armed and not self.closed:
            self._flush_armed = True
            out.append(SetTimer("flush", 0))
        return out

    def _dispatch(self, event: Event, out: list[Command]) -> None:
        if isinstance(event, DataReceived):
            if event.conn is self.client:
                self._client_data(event.data, out)
            elif event.conn is self.origin:
                self._origin_data(event.data, out)
        elif isinstance(event, OpenCompleted):
            if event.conn is self.origin:
                if self.reconnecting is not None:
                    self._reconnect_opened(event, out)
                else:
                    self._origin_opened(event, out)
        elif isinstance(event, ConnectionClosed):
            if event.conn is self.client:
                if not self.client_gone:
                    self._client_gone(out, "client closed")
            elif event.conn is self.origin:
                self._origin_closed(event, out)
        elif isinstance(event, TimerFired):
            self._timer(event.name, out)
        elif isinstance(event, Notify):
            self._notified(event, out)
        elif isinstance(event, Start):
            self.t0 = self._last_heard = self.ctx.monotonic()
            self.tcp = self.ctx.dataplane.stream_sink(self.client)
            out.append(SetTimer("idle", self._timeout / 2))

    # -- the player's side ----------------------------------------------------------------

    def _client_data(self, data: bytes, out: list[Command]) -> None:
        if self.client_gone or not data:  # the end of the stream comes as ConnectionClosed
            return
        try:
            self.reader.receive_data(data)
            while not self.closed:
                message = self.reader.next_event()
                if message is None:
                    break
                assert isinstance(message, mms.MmsCommand)  # commands_only: data raises
                self._last_heard = self.ctx.monotonic()
                if isinstance(message, mms.UnknownCommand):
                    if message.direction is mms.Direction.TO_CLIENT:
                        raise MmsProtocolError(f"a player sent server message 0x{message.mid:08x}")
                    out.append(Log("INFO", f"wmt: ignored MMS message 0x{message.mid:08x}"))
                    continue
                if message.direction is mms.Direction.TO_CLIENT:
                    raise MmsProtocolError(f"a player sent server message {type(message).__name__}")
                if isinstance(message, mms.Pong) and self.phase is not Phase.START:
                    self._on_pong(message, out)  # keep-alives never wait for the origin
                    continue
                if isinstance(message, mms.CloseFile) and self.phase is not Phase.START:
                    self.queue.clear()  # the player leaves: what it still asked is moot
                    self._on_CloseFile(message, out)
                    continue
                if len(self.queue) >= MAX_QUEUED:
                    raise MmsProtocolError("too many commands waiting for the origin")
                self.queue.append(message)
                self._next_command(out)
        except MmsProtocolError as exc:
            why = str(exc)[:160]
            out.append(Log("INFO", f"wmt: {self.client}: bad MMS from the player: {why}"))
            self._shutdown(out, f"protocol error: {why}", status=400, drain=True)

    def _next_command(self, out: list[Command]) -> None:
        """Serve queued player commands while none is waiting for the origin (or for
        another player's live feed to start: WAIT, see :meth:`_decide_split`)."""
        while (
            self.queue and self.purpose is None and self.reconnecting is None and not self.closed
            and self.mode != "WAIT"
        ):
            cmd = self.queue.popleft()
            if type(cmd) not in ACCEPTS[self.phase]:
                reply = error_reply(cmd, mms.HResult.UNEXPECTED)
                if reply is not None:
                    self._to_client(reply)
                out.append(Log(
                    "WARNING", f"wmt: {self.client}: {type(cmd).__name__} out of order in "
                    f"phase {self.phase.value}",
                ))
                self._shutdown(out, f"{type(cmd).__name__} out of order", status=400, drain=True)
                return
            handler = getattr(self, f"_on_{type(cmd).__name__}")
            handler(cmd, out)

    def _on_Connect(self, cmd: mms.Connect, out: list[Command]) -> None:
        self.subscriber = cmd.subscriber_name
        self.hint = host_hint(cmd.subscriber_name)
        self.stats.user_agent = user_agent_of(cmd.subscriber_name)
        self.phase = Phase.CONNECTED
        self._to_client(mms.ReportConnectedEx(play_incarnation=cmd.play_incarnation))

    def _on_FunnelInfo(self, cmd: mms.FunnelInfo, out: list[Command]) -> None:
        self._to_client(mms.ReportFunnelInfo(
            play_incarnation=cmd.play_incarnation, client_id=self.client.id & 0xFFFFFFFF
        ))

    def _on_ConnectFunnel(self, cmd: mms.ConnectFunnel, out: list[Command]) -> None:
        assert self.tcp is not None
        transport = cmd.transport
        refuse = mms.ReportDisconnectedFunnel(
            hr=mms.HResult.INVALID_ARGUMENT, play_incarnation=cmd.play_incarnation
        )
        if transport is None:
            self._to_client(refuse)
            return
        _, kind, port = transport
        udp: Sink | None = None
        if kind == "UDP":
            if not self.ctx.dataplane.has_udp:  # no UDP ports: MMSU refused (0x03)
                self._to_client(replace(refuse, hr=mms.HResult.NOT_IMPLEMENTED))
                out.append(Log("INFO", f"wmt: refused UDP for {self.client}: no UDP ports"))
                return
            # [MS-MMSP]: the address in the funnel name is ignored; UDP goes to the TCP peer
            udp = self.ctx.dataplane.udp_sink((self.client.peer[0], port), rtcp=False)
        self.data = ClientData(self.tcp, udp)
        self.stats.transport = "MMSU" if udp is not None else "MMST"
        self.phase = Phase.FUNNEL
        self._to_client(mms.ReportConnectedFunnel(play_incarnation=cmd.play_incarnation))

    def _on_OpenFile(self, cmd: mms.OpenFile, out: list[Command]) -> None:
        self.open_cmd = cmd
        name = cmd.file_name
        local = self.client.local[0] if self.client.local else None
        if "://" in name:
            self.client_url = name
        else:
            host = self.hint or local or "localhost"
            self.client_url = f"mms://{host}:{self.ctx.listen_port}/{name.lstrip('/')}"
        self.stats.url = self.client_url
        if not self._access_allowed(out):
            return
        settings = self.ctx.settings
        hooked = None
        if self.ctx.hook is not None:
            hooked = self.ctx.hook.mediacache_resolve_origin(
                format_name=self.ctx.format_name, url=self.client_url
            )
        target = resolve_target(
            hooked or name, self.hint, routes=self.ctx.routes,
            format_name=self.ctx.format_name, listen_port=self.ctx.listen_port,
            local_host=local, origin_port=settings.origin_port,
            forward=bool(settings.forward) or bool(hooked),
        )
        if isinstance(target, str):
            out.append(Log("INFO", f"wmt: {self.client}: {name!r}: {target}"))
            self._refuse_open(mms.HResult.FILE_NOT_FOUND, 404, target, out)
            return
        self.target = target
        if target.route is not None and target.route.live is not None:
            self.live = target.route.live
        connect_to = (target.host, target.port)
        if self.ctx.parent:  # every origin connection through the parent, with the origin's URL
            parent = resolve_target(
                self.ctx.parent, None, routes=(), format_name="", listen_port=-1,
                local_host=None, origin_port=settings.origin_port, forward=True,
            )
            if isinstance(parent, Target):
                connect_to = (parent.host, parent.port)
                self.via_parent = True
        self.phase = Phase.OPENING
        self.serving = cmd
        self.purpose = "connecting"
        self.origin = Connection("origin", connect_to)
        self.origin_state = "connecting"
        out.append(OpenConnection(self.origin, timeout=settings.origin_connect_timeout))

    def _access_allowed(self, out: list[Command]) -> bool:
        host = self.client.peer[0]
        allowed = self.ctx.access_allowed(host)
        if allowed and self.ctx.hook is not None:
            verdict = self.ctx.hook.mediacache_access_check(
                client_host=host, format_name=self.ctx.format_name, url=self.client_url
            )
            allowed = verdict is not False
        if allowed:
            return True
        out.append(Log("WARNING", f"wmt: {self.client}: access denied for {self.client_url}"))
        self.stats.result = "DENIED"
        self._refuse_open(mms.HResult.ACCESS_DENIED, 403, "access denied", out)
        return False

    def _refuse_open(self, hr: int, status: int, why: str, out: list[Command]) -> None:
        """The player's OpenFile fails (0x06 with ``hr``, as VLC wants: ``openFileId`` 0)."""
        incarnation = self.open_cmd.play_incarnation if self.open_cmd else 1
        self._to_client(mms.ReportOpenFile(hr=hr, play_incarnation=incarnation, open_file_id=0))
        self._shutdown(out, why, status=status, drain=True)

    def _on_SecurityResponse(self, cmd: mms.SecurityResponse, out: list[Command]) -> None:
        self.security_cmd = cmd  # a reconnection answers the origin's challenge with it
        self.phase = Phase.OPENING
        self._to_origin(cmd, "open", out, serving=cmd)

    def _on_ReadBlock(self, cmd: mms.ReadBlock, out: list[Command]) -> None:
        self.header_pid = cmd.play_incarnation & 0xFF
        self._to_origin(replace(cmd, play_incarnation=ORIGIN_HEADER_ID), "header", out,
                        serving=cmd)

    def _on_StreamSwitch(self, cmd: mms.StreamSwitch, out: list[Command]) -> None:
        self.asked = cmd.selected
        self._to_origin(cmd, "switch", out, serving=cmd)

    def _on_StartPlaying(self, cmd: mms.StartPlaying, out: list[Command]) -> None:
        data = self.data
        assert data is not None
        self._stop_playing(out)
        self.play_cmd = cmd
        data.packet_id = cmd.packet_id
        if self.mode is None:
            self._decide(cmd, out)
        if self.mode == "WAIT":  # held, first in the queue, until the feed starts or fails
            self.queue.appendleft(cmd)
            bound = self.ctx.settings.origin_response_timeout + FEED_WAIT_GRACE
            out.append(SetTimer("feed-wait", bound))
            return
        if self.mode == "HIT":
            self._play_cached(cmd, out)
            return
        if self.mode == "SPLIT" or (self.mode == "FEED" and self.feed is not None):
            self._join_feed(cmd, out)
            return
        if self.recorder is not None:  # a second play of a miss: the fill cannot go on
            self._abort_fill(out, "the player restarted during the fill")
        self._to_origin(replace(cmd, play_incarnation=ORIGIN_DATA_ID), "start", out, serving=cmd)

    def _on_StopPlaying(self, cmd: mms.StopPlaying, out: list[Command]) -> None:
        incarnation = self.play_cmd.play_incarnation if self.play_cmd else cmd.play_incarnation
        if self.mode in ("HIT", "SPLIT") or (self.mode == "FEED" and self.feed is not None):
            self._stop_playing(out)
            self._to_client(mms.ReportEndOfStream(play_incarnation=incarnation))
            return
        self._abort_fill(out, "the player paused during the fill")
        self.pending_end = None
        out.append(CancelTimer("eos"))
        self._to_origin(replace(cmd, play_incarnation=ORIGIN_DATA_ID), "stop", out, serving=cmd)

    def _on_StartStriding(self, cmd: mms.StartStriding, out: list[Command]) -> None:
        self._to_client(mms.ReportStartStriding(
            hr=mms.HResult.NOT_IMPLEMENTED, play_incarnation=cmd.play_incarnation
        ))

    def _on_CloseFile(self, cmd: mms.CloseFile, out: list[Command]) -> None:
        if self.mode == "FEED" and self.feed is not None:
            # our origin session carries the broadcast of other viewers: it must not end here
            self._client_gone(out, "closed by the player")
            if not self.closed:
                out.append(CloseConnection(self.client))
            return
        self._shutdown(out, "closed by the player")

    def _on_Logging(self, cmd: mms.Logging, out: list[Command]) -> None:
        if self.origin is not None and self.origin_state == "open" and self.opened is not None:
            self._to_origin(cmd, None, out)  # the origin's logs see its real viewer

    def _on_pong(self, cmd: mms.Pong, out: list[Command]) -> None:
        """Keep-alive: the answer to our Ping; an unsolicited Pong (VLC, paused) gets one Ping."""
        if self._ping_out:
            self._ping_out = False
            return
        self._ping_out = True
        self._to_client(mms.Ping(param1=cmd.param1, param2=cmd.param2))

    # -- the origin's side ----------------------------------------------------------------

    def _origin_opened(self, event: OpenCompleted, out: list[Command]) -> None:
        assert self.origin is not None and self.target is not None
        if event.error is not None:
            self.origin_state = "closed"
            host, port = event.conn.peer
            if self.via_parent and self.ctx.settings.parent_fallback:
                out.append(Log("WARNING", f"wmt: {self.client}: parent {host}:{port} unreachable "
                               f"({event.error}); going to the origin directly"))
                self.via_parent = False
                self.origin = Connection("origin", (self.target.host, self.target.port))
                self.origin_state = "connecting"
                timeout = self.ctx.settings.origin_connect_timeout
                out.append(OpenConnection(self.origin, timeout=timeout))
                return
            why = f"origin {host}:{port} unreachable: {event.error}"
            out.append(Log("WARNING", f"wmt: {self.client}: {why}"))
            self.purpose = None
            hr = mms.HResult.TIMEOUT if event.timed_out else mms.HResult.CONNECTION_LOST
            self._refuse_open(hr, 504 if event.timed_out else 502, why, out)
            return
        self.origin_state = "open"
        self.origin_reader = mms.MmsStreamReader(max_command_size=MAX_COMMAND)
        self._to_origin(self._connect_request(), "connect", out, serving=self.open_cmd)

    def _connect_request(self) -> mms.Connect:
        """Our Connect (0x01) to the origin: the player's agent, the origin's ``Host:``."""
        assert self.target is not None
        parts = [p.strip() for p in (self.subscriber or DEFAULT_AGENT).split(";")]
        parts = [p for p in parts if p and not p.lower().startswith("host:")]
        parts.append(f"Host: {self.target.host}")
        return mms.Connect("; ".join(parts), play_incarnation=0xF0F0F0EF)

    def _funnel_request(self) -> mms.ConnectFunnel:
        """Our ConnectFunnel (0x02): MMST, named by our end of the origin connection."""
        assert self.origin is not None
        local = self.origin.local or ("127.0.0.1", 0)
        return mms.ConnectFunnel.for_transport(local[0], "TCP", local[1] or 1037)

    def _open_request(self) -> mms.OpenFile:
        """Our OpenFile (0x05): the player's, with the origin's name for the file."""
        opened, target = self.open_cmd, self.target
        assert opened is not None and target is not None
        name = target.url if self.via_parent else target.path
        return mms.OpenFile(name, play_incarnation=opened.play_incarnation,
                            spare=opened.spare, token_data=opened.token_data)

    def _origin_data(self, data: bytes, out: list[Command]) -> None:
        if not data:
            return
        reader = self.origin_reader
        try:
            reader.receive_data(data)
            while (
                not self.closed and reader is self.origin_reader  # not after a reconnection
                and (frame := reader.next_frame()) is not None
            ):
                if mms.is_command(frame):
                    self._origin_command(mms.parse_command(frame), out)
                else:
                    self._origin_packet(frame, out)
        except MmsProtocolError as exc:
            why = f"bad MMS from the origin: {str(exc)[:160]}"
            if self.reconnecting is not None:
                self._origin_lost(out, why)
                return
            out.append(Log("WARNING", f"wmt: {self.client}: {why}"))
            self._origin_failed(out, why, mms.HResult.UNEXPECTED, 502)

    def _origin_packet(self, frame: bytes, out: list[Command]) -> None:
        pid = frame[4]
        parts = self.header_parts
        if parts is not None and pid == ORIGIN_HEADER_ID:
            parts += frame[mms.DATA_PACKET_HEADER_SIZE:]
            if self.reconnecting is not None:  # our own ReadBlock: the players have theirs
                if frame[5] & mms.DataFlags.LAST:
                    self._reconnect_header(bytes(parts), out)
                return
            if self.data is not None and not self.client_gone:
                self.data.send_header_part(frame, self.header_pid)
            if frame[5] & mms.DataFlags.LAST:
                self._header_done(bytes(parts), out)
            return
        if pid != ORIGIN_DATA_ID or not self.from_origin:
            return
        info = self.header_info
        if info is not None and len(frame) - mms.DATA_PACKET_HEADER_SIZE > info.packet_size:
            return  # the origin's end marker for ffmpeg; we send our own after 0x1E
        self.stats.origin_bytes += len(frame)
        if self.recorder is not None:
            self.last_origin_data = self.ctx.monotonic()
            self._record(frame, out)
        if self.fan is not None:
            self.fan.send(frame)
        elif self.data is not None and not self.client_gone:
            self.data.send(frame)

    def _header_done(self, header: bytes, out: list[Command]) -> None:
        self.header_parts = None
        self.header = header
        try:
            self.header_info = asf.parse_asf_header(header)
        except MmsProtocolError as exc:
            self.header_info = None
            out.append(Log("WARNING", f"wmt: {self.client}: origin header unreadable: {exc}"))

    def _origin_command(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        if isinstance(cmd, mms.Ping):
            self._to_origin(mms.Pong(cmd.param1, cmd.param2), None, out)
            return
        if isinstance(cmd, mms.ReportEndOfStream) and self.purpose != "stop":
            self._origin_ended(cmd.hr, out)
            return
        if cmd.direction is not mms.Direction.TO_CLIENT:
            raise MmsProtocolError(f"the origin sent player message {type(cmd).__name__}")
        purpose = self.purpose
        if purpose is None:
            out.append(Log("DEBUG", f"wmt: {self.client}: origin sent {type(cmd).__name__}"))
            return
        self.purpose = None
        out.append(CancelTimer("origin-response"))
        getattr(self, f"_reply_{purpose}")(cmd, out)
        if not self.closed and self.purpose is None:
            self.serving = None
            if self.take_over_due:
                self._take_over(out)
            self._next_command(out)

    def _expect(self, cmd: mms.MmsCommand, *kinds: type[mms.MmsCommand]) -> None:
        if not isinstance(cmd, kinds):
            raise MmsProtocolError(
                f"origin answered {type(cmd).__name__}, expected "
                + " or ".join(k.__name__ for k in kinds)
            )

    def _reply_connect(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportConnectedEx)
        assert isinstance(cmd, mms.ReportConnectedEx)
        if cmd.hr:
            self._origin_refused(cmd.hr, "Connect", out)
            return
        self._to_origin(mms.FunnelInfo(), "funnel_info", out, serving=self.open_cmd)

    def _reply_funnel_info(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportFunnelInfo)
        self._to_origin(self._funnel_request(), "funnel", out, serving=self.open_cmd)

    def _reply_funnel(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportConnectedFunnel, mms.ReportDisconnectedFunnel)
        if isinstance(cmd, mms.ReportDisconnectedFunnel):
            self._origin_refused(cmd.hr or mms.HResult.UNEXPECTED, "ConnectFunnel", out)
            return
        request = self._open_request()
        if request.token_data:
            self.authenticated = True  # credentials sent unasked: never cached either
        self._to_origin(request, "open", out, serving=self.open_cmd)

    def _reply_open(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportOpenFile, mms.SecurityChallenge)
        incarnation = self.open_cmd.play_incarnation if self.open_cmd else 1
        if isinstance(cmd, mms.SecurityChallenge):
            self.authenticated = True
            self.phase = Phase.CHALLENGED
            self.stats.status = 401
            self._to_client(replace(cmd, play_incarnation=incarnation))
            return
        assert isinstance(cmd, mms.ReportOpenFile)
        self._to_client(replace(cmd, play_incarnation=incarnation))
        if cmd.hr or not cmd.open_file_id:
            status = _HR_STATUS.get(cmd.hr, 502)  # type: ignore[call-overload]
            self._shutdown(out, f"origin refused the file (hr 0x{cmd.hr:08x})", status=status,
                           drain=True)
            return
        self.opened = cmd
        if self.target is None or self.target.route is None or self.target.route.live is None:
            self.live = cmd.is_broadcast
        self.phase = Phase.OPEN
        self.stats.status = 200
        out.append(Log("INFO", f"wmt: {self.client} opened {self.target.url if self.target else ''}"
                       f" over {self.stats.transport}{' (live)' if self.live else ''}"))

    def _reply_header(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportReadBlock)
        assert isinstance(cmd, mms.ReportReadBlock)
        serving = self.serving
        incarnation = serving.play_incarnation if isinstance(serving, mms.ReadBlock) else 2
        self._to_client(replace(cmd, play_incarnation=incarnation))
        if not cmd.hr:
            self.header_parts = bytearray()

    def _reply_switch(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportStreamSwitch)
        assert isinstance(cmd, mms.ReportStreamSwitch)
        self._to_client(cmd)
        if not cmd.hr and isinstance(self.serving, mms.StreamSwitch):
            self.switch_cmd = self.serving  # a reconnection asks for the same streams
        if not cmd.hr and self.asked:
            self.selected = self.asked
            if self.mode is not None and self.mode != "PASS":  # a new variant mid-session
                out.append(Log("INFO", f"wmt: {self.client}: streams changed after play"))

    def _reply_start(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportStartedPlaying)
        assert isinstance(cmd, mms.ReportStartedPlaying) and self.play_cmd is not None
        self._to_client(replace(cmd, play_incarnation=self.play_cmd.play_incarnation))
        if cmd.hr:
            if self.mode == "FEED" and self.feed is None:
                self._feed_start_failed(cmd.hr, out)
            return
        self.from_origin = self.playing = True
        if self.mode == "MISS" and not self.fill_tried:
            self.fill_tried = True
            self._begin_fill(out)
        elif self.mode == "FEED" and self.feed is None:
            self._start_feed(out)

    def _reply_stop(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        self._expect(cmd, mms.ReportEndOfStream)
        assert isinstance(cmd, mms.ReportEndOfStream)
        self.from_origin = self.playing = False
        serving = self.serving
        incarnation = serving.play_incarnation if isinstance(serving, mms.StopPlaying) else 4
        if self.play_cmd is not None:
            incarnation = self.play_cmd.play_incarnation
        self._to_client(replace(cmd, play_incarnation=incarnation))

    def _origin_refused(self, hr: int, what: str, out: list[Command]) -> None:
        out.append(Log("WARNING", f"wmt: {self.client}: origin refused {what} (hr 0x{hr:08x})"))
        self._refuse_open(hr, _HR_STATUS.get(hr, 502), f"origin refused {what}", out)  # type: ignore[call-overload]

    def _origin_ended(self, hr: int, out: list[Command]) -> None:
        """The origin's 0x1E after its last data packet: commit a complete fill, end the play."""
        if not self.from_origin:
            return
        self.from_origin = False
        if self.recorder is not None:
            if hr == 0:
                self._commit_fill(out)
            else:
                self._abort_fill(out, f"the origin ended with hr 0x{hr:08x}")
        if self.mode == "FEED" and self.feed is not None:
            self._stop_feed_use(out, "the origin ended the broadcast")
            self.mode = "PASS"
        if self.background:
            self._shutdown(out, "the origin ended the stream")
            return
        if not self.client_gone:
            self._end_of_stream(hr, out)

    def _origin_closed(self, event: ConnectionClosed, out: list[Command]) -> None:
        self.origin_state = "closed"
        why = "origin closed the connection" + (f": {event.error}" if event.error else "")
        feed = self.feed
        if feed is not None and self.ctx.splitter is not None and self.mode in ("FEED", "SPLIT"):
            if self.client_gone and not feed.viewers - {self}:
                self._shutdown(out, f"live feed lost: {why}")  # nobody left to reconnect for
                return
            self._origin_lost(out, why, closed=True)
            return
        self._origin_failed(out, why, mms.HResult.CONNECTION_LOST, 502)

    def _origin_failed(self, out: list[Command], why: str, hr: int, status: int) -> None:
        """The origin is gone or broken: answer what waits, end the play, close the session."""
        if self.serving is not None and self.purpose is not None and not self.client_gone:
            reply = error_reply(self.serving, hr)
            if reply is not None:
                self._to_client(reply)
        elif self.playing and not self.client_gone:
            incarnation = self.play_cmd.play_incarnation if self.play_cmd else 4
            self._to_client(mms.ReportEndOfStream(hr=hr, play_incarnation=incarnation))
        self.purpose = None
        self._shutdown(out, why, status=status if self.stats.status < 300 else None,
                       drain=True)

    # -- the cache ------------------------------------------------------------------------

    def _pass(self, why: str, out: list[Command]) -> None:
        self.mode = "PASS"
        out.append(Log("DEBUG", f"wmt: {self.client}: not cached: {why}"))

    def _decide(self, cmd: mms.StartPlaying, out: list[Command]) -> None:
        """HIT, MISS, PASS, or a live feed (FEED/SPLIT): see the module docstring."""
        info, opened, target = self.header_info, self.opened, self.target
        if info is None or opened is None or target is None or self.header is None:
            return self._pass("no header was read", out)
        selected = self.selected or info.stream_numbers
        variant = ",".join(map(str, sorted(selected)))
        if self.ctx.hook is not None:
            hooked = self.ctx.hook.mediacache_cache_variant(
                format_name=self.ctx.format_name, url=target.url, variant=variant
            )
            variant = hooked if hooked is not None else variant
            live = self.ctx.hook.mediacache_is_live(
                format_name=self.ctx.format_name, url=target.url, description=self.header
            )
            if live is not None and (target.route is None or target.route.live is None):
                self.live = bool(live)
        self.stats.variant = variant
        if self.live:
            return self._decide_split(variant, out)
        cache = self.ctx.cache
        if cache is None or not cache.settings.enabled:
            return self._pass("cache disabled", out)
        if self.authenticated and not self._may_cache_authenticated(target.url):
            return self._pass("authenticated content", out)
        key = CacheKey.make(self.ctx.format_name, target.url, variant)
        self.validators = {
            "header": hashlib.blake2b(self.header, digest_size=16).hexdigest(),
            "packets": str(opened.file_packet_count),
        }
        store = cache.store
        obj = store.get(key)
        if obj is not None and obj.meta.validators == self.validators:
            return self._start_hit(key, obj, out)
        if obj is not None:
            out.append(Log("INFO", f"wmt: {self.client}: {key.url} changed at the origin"))
            store.purge(key)
        fill = store.get_fill(key)
        if fill is not None and fill.meta.validators == self.validators:
            return self._start_hit(key, fill, out)
        if fill is not None:
            return self._pass("another version of the clip is being filled", out)
        if cmd.position > 0 or cmd.location_id not in (0, 0xFFFFFFFF):
            return self._pass("a miss that does not start at the beginning", out)
        self.mode = "MISS"
        self.cache_key = key
        self.stats.result = "MISS"
        return None

    def _may_cache_authenticated(self, url: str) -> bool:
        """DESIGN.md: Windows Media streams that needed authentication are never cached."""
        if self.ctx.hook is not None:
            verdict = self.ctx.hook.mediacache_cache_allowed(
                format_name=self.ctx.format_name, url=url, authenticated=True
            )
            if verdict is not None:
                return bool(verdict)
        return False

    def _start_hit(self, key: CacheKey, source: object, out: list[Command]) -> None:
        assert self.data is not None and self.ctx.cache is not None
        self.replay = CacheReplay(source, self.data, self._replay_ended)  # type: ignore[arg-type]
        self.mode = "HIT"
        self.cache_key = key
        self.ctx.cache.join(key)
        self.stats.result = "HIT"

    def _replay_ended(self, reason: str | None) -> None:
        """Called by the playout scheduler, outside ``handle``: post ourselves the news."""
        self.ctx.post(Notify("wmt-replay-end", reason or ""))

    def _play_cached(self, cmd: mms.StartPlaying, out: list[Command]) -> None:
        replay, info = self.replay, self.header_info
        assert replay is not None and info is not None
        video = frozenset(s.number for s in info.streams if s.kind == "video")
        if self.selected is not None:
            video &= self.selected
        index = start_index(
            replay.source, location_id=cmd.location_id, position=cmd.position, video=video
        )
        self._to_client(mms.ReportStartedPlaying(play_incarnation=cmd.play_incarnation))
        self.playing = True
        replay.play(self.ctx.monotonic(), index)
        out.append(StartPlayout(replay))

    def _begin_fill(self, out: list[Command]) -> None:
        cache, key, info = self.ctx.cache, self.cache_key, self.header_info
        assert cache is not None and key is not None and info is not None
        assert self.header is not None
        try:
            fill = cache.store.begin_fill(
                key,
                description=self.header,
                tracks=[TrackMeta(track_id=0, control=FEED_TRACK, codec="asf")],
                validators=self.validators,
                duration=info.duration or None,
                format_data={"packet_size": str(info.packet_size), "streams": key.variant},
            )
        except CacheError as exc:
            self._pass(f"fill not started: {exc}", out)
            return
        self.recorder = _Recording(fill)
        self.last_origin_data = self.ctx.monotonic()
        out.append(SetTimer("fill-watchdog", FILL_IDLE_LIMIT))
        out.append(Log("INFO", f"wmt: {self.client}: cache fill of {key.url} [{key.variant}] "
                       "started"))

    def _record(self, frame: bytes, out: list[Command]) -> None:
        rec = self.recorder
        assert rec is not None
        location = int.from_bytes(frame[:4], "little")
        if location <= rec.last_location:
            self._abort_fill(out, f"LocationId {location} after {rec.last_location}")
            return
        try:
            send = asf.packet_send_time(frame[mms.DATA_PACKET_HEADER_SIZE:])
        except MmsProtocolError as exc:
            self._abort_fill(out, str(exc))
            return
        if rec.first_send is None:
            rec.first_send = send
        t = max(0.0, (send - rec.first_send) / 1000)
        rec.fill.add_packet(0, t, frame)
        rec.count += 1
        rec.last_location = location
        rec.received = t

    def _commit_fill(self, out: list[Command]) -> None:
        rec, opened, info = self.recorder, self.opened, self.header_info
        assert rec is not None and opened is not None and info is not None
        every = self.selected is None or self.selected >= info.stream_numbers
        total = opened.file_packet_count
        if not rec.count or rec.last_location >= total or (every and rec.count != total):
            self._abort_fill(out, f"incomplete: {rec.count} packets of {total}")
            return
        self.recorder = None
        try:
            obj = rec.fill.commit()
        except (CacheError, OSError) as exc:
            out.append(Log("ERROR", f"wmt: {self.client}: cache fill not stored: {exc}"))
        else:
            out.append(Log("INFO", f"wmt: {self.client}: cached {obj.meta.key.url} "
                           f"[{obj.meta.key.variant}]: {obj.meta.packet_count} packets, "
                           f"{obj.meta.size} bytes"))
        if self.background:
            self._shutdown(out, "background fill complete")

    def _abort_fill(self, out: list[Command], why: str) -> None:
        """Drop the fill; a background one (its player gone) ends its session too, as the
        RTSP layer's does: nothing is left to pull from the origin."""
        rec = self.recorder
        if rec is None:
            return
        self.recorder = None
        rec.fill.abort(why)
        out.append(Log("INFO", f"wmt: {self.client}: cache fill aborted: {why}"))
        if self.background:
            self._shutdown(out, f"background fill aborted: {why}")

    # -- live splitting -------------------------------------------------------------------

    def _decide_split(self, variant: str, out: list[Command]) -> None:
        """Join the broadcast's feed (SPLIT), start it (FEED: our StartPlaying goes to the
        origin), or wait while another player's StartPlaying starts it (WAIT: the player's
        StartPlaying is held until a ``feed-start`` notice, see core/splitter.py)."""
        splitter, target = self.ctx.splitter, self.target
        if splitter is None or target is None:
            return self._pass("live, and splitting is disabled", out)
        key = (self.ctx.format_name, target.url, variant)
        self.feed_key = key
        feed = splitter.get(key)
        if feed is not None and FEED_TRACK in feed.tracks:
            self.feed, self.mode = feed, "SPLIT"
            feed.posts[self] = self.ctx.post
            self.stats.result = "SPLIT"
            if feed.orphaned:  # its owner's player is gone: we may carry it instead
                splitter.hand_over(feed)
            return None
        self.mode = "FEED" if splitter.claim(key, self, self.ctx.post) else "WAIT"
        return None

    def _feed_wait_over(self, out: list[Command]) -> None:
        """The feed we waited for started or failed: decide again (join it, or start it)."""
        if self.mode != "WAIT":
            return
        self.mode = None
        out.append(CancelTimer("feed-wait"))
        self._next_command(out)

    def _feed_wait_timeout(self, out: list[Command]) -> None:
        """Another player's feed neither started nor failed in time: a clean error, never a
        second upstream."""
        if self.mode != "WAIT" or not self.queue:
            return
        held = self.queue.popleft()
        why = "the live feed did not start in time"
        out.append(Log("WARNING", f"wmt: {self.client}: {why}"))
        self._to_client(mms.ReportStartedPlaying(
            hr=mms.HResult.TIMEOUT, play_incarnation=held.play_incarnation
        ))
        self._shutdown(out, why, status=504, drain=True)

    def _feed_start_failed(self, hr: int, out: list[Command]) -> None:
        """The origin refused our StartPlaying: the players waiting decide again (one of
        them starts the feed), and so does a StartPlaying our player retries."""
        splitter, key = self.ctx.splitter, self.feed_key
        if splitter is not None and key is not None:
            splitter.release(key, self)
        self.mode = None
        out.append(Log("INFO", f"wmt: {self.client}: live feed not started (hr 0x{hr:08x})"))

    def _viewer_sinks(self) -> dict[str, tuple[Sink, Sink]]:
        assert self.data is not None
        return {FEED_TRACK: (self.data, self.data)}

    def _start_feed(self, out: list[Command]) -> None:
        """Our StartPlaying was accepted: our origin session becomes the broadcast's feed."""
        splitter, key = self.ctx.splitter, self.feed_key
        assert splitter is not None and key is not None
        if splitter.get(key) is not None:  # a feed of the key exists already: stay a relay
            splitter.release(key, self)
            self.mode = "PASS"
            return
        feed = splitter.start(key, self, [FEED_TRACK])
        self.fan = feed.tracks[FEED_TRACK].rtp
        feed.join(self, self._viewer_sinks())
        feed.detach, feed.owner_post = self._feed_detached, self.ctx.post
        self.feed = feed
        out.append(Log("INFO", f"wmt: {self.client}: live feed of {key[1]} [{key[2]}] started"))

    def _join_feed(self, cmd: mms.StartPlaying, out: list[Command]) -> None:
        feed = self.feed
        if feed is None or feed.ended is not None:
            self._to_client(mms.ReportStartedPlaying(
                hr=mms.HResult.NO_MORE_DATA, play_incarnation=cmd.play_incarnation
            ))
            return
        self._to_client(mms.ReportStartedPlaying(play_incarnation=cmd.play_incarnation))
        self.playing = True
        feed.join(self, self._viewer_sinks())

    def _stop_feed_use(self, out: list[Command], reason: str) -> None:
        feed, splitter = self.feed, self.ctx.splitter
        if splitter is not None and self.feed_key is not None:
            splitter.release(self.feed_key, self)  # a feed we were starting, or waiting for
        if feed is None:
            return
        self.feed = None
        self.fan = None
        if self.mode == "SPLIT":
            feed.leave(self, self._viewer_sinks())
            feed.posts.pop(self, None)
            if splitter is not None:
                splitter.take_over_failed(feed, self)  # if we were asked: the next one is
            return
        if splitter is not None:
            splitter.end(feed, reason)
        out.append(Log("INFO", f"wmt: {self.client}: live feed of {feed.key[1]} ended: {reason}"))

    def _take_over(self, out: list[Command]) -> None:
        """The feed's owner left (``feed-handover``): StartPlaying on our accounting session
        (its header read, its streams selected), so that it carries the feed (see
        core/splitter.py). Until the origin's answer the player's commands wait (``purpose``);
        a player that is leaving (CloseFile, gone) declines, or passes it on when it leaves."""
        feed, splitter = self.feed, self.ctx.splitter
        if feed is None or splitter is None or feed.successor is not self:
            return
        if self.purpose is not None and self.purpose != "reconnect" and not self.closed:
            self.take_over_due = True  # a command of the player's is at the origin: after it
            return
        self.take_over_due = False
        if (
            self.mode != "SPLIT" or self.closed or self.client_gone
            or self.origin_state != "open" or self.reconnecting is not None
            or self.opened is None
        ):
            splitter.take_over_failed(feed, self)
            return
        request = mms.StartPlaying(play_incarnation=ORIGIN_DATA_ID,
                                   open_file_id=self.opened.open_file_id)
        self._to_origin(request, "take_over", out)
        out.append(Log("INFO", f"wmt: {self.client}: takes the live feed of {feed.key[1]} over"))

    def _reply_take_over(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        """The origin answered our take-over StartPlaying (never the player's business): on
        success we own the feed (the splitter detaches the former owner at once) and our
        origin's packets go to the fan-out; on a refusal the next joiner is asked."""
        self._expect(cmd, mms.ReportStartedPlaying)
        assert isinstance(cmd, mms.ReportStartedPlaying)
        feed, splitter = self.feed, self.ctx.splitter
        if feed is None or splitter is None or feed.successor is not self:
            return
        if cmd.hr or self.mode != "SPLIT":
            out.append(Log("WARNING", f"wmt: {self.client}: live feed not taken over: origin "
                           f"refused StartPlaying (hr 0x{cmd.hr:08x})"))
            splitter.take_over_failed(feed, self)
            return
        splitter.take_over(feed, self, self._feed_detached, self.ctx.post)
        fan = feed.tracks[FEED_TRACK].rtp
        self.fan = _Resume(fan, self._resumed)
        self.mode, self.from_origin = "FEED", True
        feed.viewers.add(self)  # a paused successor holds the feed as a paused owner does
        out.append(Log("INFO", f"wmt: {self.client}: took the live feed of {feed.key[1]} over"))

    def _resumed(self, fan: FanOut) -> None:
        """Our origin's packets reached what the viewers had: straight to the fan-out now."""
        if isinstance(self.fan, _Resume):
            self.fan = fan

    def _feed_detached(self) -> None:
        """A joiner took our feed over (called by the splitter, in its session's turn): our
        origin's packets reach no viewer from now on (still counted in our background
        record); a ``feed-handed-over`` notice follows, at which we close."""
        self.fan = self.feed = None
        self.mode = "PASS"

    def _feed_linger(self, out: list[Command]) -> None:
        feed, splitter = self.feed, self.ctx.splitter
        if feed is None or splitter is None:
            return
        if feed.linger_over(self.ctx.monotonic(), splitter.linger):
            self._shutdown(out, "live feed released (no viewers)")
            return
        out.append(SetTimer("feed-linger", 1.0))

    # -- reconnecting a live feed ---------------------------------------------------------

    def _role(self) -> str:
        return "live feed" if self.mode == "FEED" else "accounting session"

    def _origin_lost(self, out: list[Command], why: str, *, closed: bool = False) -> None:
        """The origin connection of a live feed (owner) or of a viewer's accounting session
        (joiner) is gone, or a reconnection attempt failed: retry later, or give up."""
        splitter = self.ctx.splitter
        assert splitter is not None
        had_connection = closed or self.origin_state == "open"
        if self.purpose == "take_over" or self.take_over_due:  # the next joiner, then
            self.take_over_due = False
            if self.feed is not None:
                splitter.take_over_failed(self.feed, self)
        if self.origin is not None and self.origin_state in ("open", "connecting"):
            out.append(CloseConnection(self.origin))
        self.origin_state = "closed"
        if self.purpose not in (None, "reconnect") and self.serving not in (None, self.open_cmd):
            assert self.serving is not None
            self.queue.appendleft(self.serving)  # the player's question goes to the new one
        self.purpose = self.serving = None
        self.header_parts = None
        self.from_origin = False
        self.reconnect_why = why
        out.append(CancelTimer("origin-response"))
        now = self.ctx.monotonic()
        if self.reconnecting is None:
            self.reconnecting = now
            self.reconnect_attempt = 0
            out.append(Log("WARNING", f"wmt: {self.client}: {self._role()} lost its origin "
                           f"({why}); reconnecting"))
        else:
            out.append(Log("DEBUG", f"wmt: {self.client}: reconnection attempt failed: {why}"))
        left = splitter.reconnect_timeout - (now - self.reconnecting)
        if left <= 0:
            self._reconnect_give_up(out)
            return
        if self.client_gone and had_connection:
            # a background owner: the driver would release a session left with no connection
            out.append(CancelTimer("feed-reconnect"))
            self._reconnect_now(out)
            return
        delay = min(0.5 * 2**self.reconnect_attempt, 4.0, left)
        self.reconnect_attempt += 1
        out.append(SetTimer("feed-reconnect", delay))

    def _reconnect_left(self) -> float:
        splitter = self.ctx.splitter
        assert splitter is not None and self.reconnecting is not None
        return splitter.reconnect_timeout - (self.ctx.monotonic() - self.reconnecting)

    def _reconnect_timer(self, out: list[Command]) -> None:
        if self._reconnect_left() <= 0:
            self._reconnect_give_up(out)
            return
        self._reconnect_now(out)

    def _reconnect_now(self, out: list[Command]) -> None:
        """A new connection to where the lost one went (the origin, or the parent)."""
        assert self.origin is not None
        self.origin = Connection("origin", self.origin.peer)
        self.origin_state = "connecting"
        self.origin_reader = mms.MmsStreamReader(max_command_size=MAX_COMMAND)
        self.origin_seq = 0
        timeout = min(self.ctx.settings.origin_connect_timeout, self._reconnect_left())
        out.append(OpenConnection(self.origin, timeout=max(0.1, timeout)))

    def _reconnect_opened(self, event: OpenCompleted, out: list[Command]) -> None:
        if event.error is not None:
            self.origin_state = "closed"
            self._origin_lost(out, f"reconnect failed: {event.error}")
            return
        self.origin_state = "open"
        self._reconnect_ask(self._connect_request(), "connect", out)

    def _reconnect_ask(self, cmd: mms.MmsCommand, stage: str, out: list[Command]) -> None:
        """One step of the handshake on the new connection, answered within the time left."""
        self.reconnect_stage = stage
        self._to_origin(cmd, "reconnect", out)
        timeout = min(self.ctx.settings.origin_response_timeout, self._reconnect_left())
        out.append(SetTimer("origin-response", max(0.1, timeout)))

    def _reply_reconnect(self, cmd: mms.MmsCommand, out: list[Command]) -> None:
        """The origin's answer to one step of the reconnection (see the module docstring)."""
        stage = self.reconnect_stage
        hr = int(getattr(cmd, "hr", 0) or 0)
        if stage == "connect":
            self._expect(cmd, mms.ReportConnectedEx)
            if hr:
                return self._origin_lost(out, f"origin refused Connect (hr 0x{hr:08x})")
            return self._reconnect_ask(mms.FunnelInfo(), "funnel_info", out)
        if stage == "funnel_info":
            self._expect(cmd, mms.ReportFunnelInfo)
            return self._reconnect_ask(self._funnel_request(), "funnel", out)
        if stage == "funnel":
            self._expect(cmd, mms.ReportConnectedFunnel, mms.ReportDisconnectedFunnel)
            if isinstance(cmd, mms.ReportDisconnectedFunnel):
                return self._origin_lost(out, f"origin refused ConnectFunnel (hr 0x{hr:08x})")
            return self._reconnect_ask(self._open_request(), "open", out)
        if stage in ("open", "challenged"):
            self._expect(cmd, mms.ReportOpenFile, mms.SecurityChallenge)
            if isinstance(cmd, mms.SecurityChallenge):
                if stage == "challenged" or self.security_cmd is None:
                    return self._origin_lost(out, "origin wants credentials we do not have")
                answer = replace(self.security_cmd, cookie=cmd.cookie)
                return self._reconnect_ask(answer, "challenged", out)
            assert isinstance(cmd, mms.ReportOpenFile)
            if hr or not cmd.open_file_id:
                return self._origin_lost(out, f"origin refused the file (hr 0x{hr:08x})")
            self.opened = cmd
            if self.header is not None:
                request = mms.ReadBlock(play_incarnation=ORIGIN_HEADER_ID,
                                        open_file_id=cmd.open_file_id)
                return self._reconnect_ask(request, "header", out)
            return self._reconnect_switch(out)
        if stage == "header":
            self._expect(cmd, mms.ReportReadBlock)
            if hr:
                return self._origin_lost(out, f"origin refused ReadBlock (hr 0x{hr:08x})")
            self.header_parts = bytearray()
            self.purpose = "reconnect"  # now the header's parts (data packets) are awaited
            self.reconnect_stage = "header_parts"
            timeout = min(self.ctx.settings.origin_response_timeout, self._reconnect_left())
            out.append(SetTimer("origin-response", max(0.1, timeout)))
            return None
        if stage == "switch":
            self._expect(cmd, mms.ReportStreamSwitch)
            if hr:
                return self._origin_lost(out, f"origin refused StreamSwitch (hr 0x{hr:08x})")
            return self._reconnect_start(out)
        if stage == "start":
            self._expect(cmd, mms.ReportStartedPlaying)
            if hr:
                return self._origin_lost(out, f"origin refused StartPlaying (hr 0x{hr:08x})")
            self.from_origin = True
            return self._reconnect_done(out)
        raise MmsProtocolError(f"origin sent {type(cmd).__name__} during the header")

    def _reconnect_header(self, header: bytes, out: list[Command]) -> None:
        """The header's last part on the new connection: on to the stream selection."""
        self.header_parts = None
        self.purpose = None
        out.append(CancelTimer("origin-response"))
        if header != self.header:
            out.append(Log("WARNING", f"wmt: {self.client}: the origin's header changed while "
                           "reconnecting; its viewers keep the one they read"))
            self._header_done(header, out)
        self._reconnect_switch(out)

    def _reconnect_switch(self, out: list[Command]) -> None:
        if self.switch_cmd is not None:
            self._reconnect_ask(self.switch_cmd, "switch", out)
            return
        self._reconnect_start(out)

    def _reconnect_start(self, out: list[Command]) -> None:
        if self.mode == "FEED":  # the owner asks for the broadcast again; a joiner does not
            open_id = self.opened.open_file_id if self.opened is not None else 1
            request = mms.StartPlaying(play_incarnation=ORIGIN_DATA_ID, open_file_id=open_id)
            self._reconnect_ask(request, "start", out)
            return
        self._reconnect_done(out)

    def _reconnect_done(self, out: list[Command]) -> None:
        assert self.reconnecting is not None
        lost_for = self.ctx.monotonic() - self.reconnecting
        self.reconnecting = None
        self.reconnect_stage = ""
        out.append(CancelTimer("feed-reconnect"))
        out.append(Log("INFO", f"wmt: {self.client}: {self._role()} reconnected to its origin "
                       f"after {lost_for:.1f} s"))
        self._next_command(out)

    def _reconnect_give_up(self, out: list[Command]) -> None:
        """``reconnect_timeout`` is over: end this viewer (and, owner, every joiner) cleanly."""
        splitter = self.ctx.splitter
        assert splitter is not None
        why = f"live feed lost: {self.reconnect_why}"
        self.reconnecting = None
        out.append(Log("WARNING", f"wmt: {self.client}: {self._role()} did not get its origin "
                       f"back in {splitter.reconnect_timeout:g} s; ending"))
        while self.queue:  # what the player asked meanwhile gets its error
            reply = error_reply(self.queue.popleft(), mms.HResult.CONNECTION_LOST)
            if reply is not None:
                self._to_client(reply)
        if self.playing and not self.client_gone:
            self._send_end(mms.HResult.CONNECTION_LOST)
        if self.mode == "FEED":
            self._stop_feed_use(out, why)  # the joiners are told, and end
        self._shutdown(out, why, status=502, drain=True)

    # -- playing ----------------------------------------------------------------------------

    def _stop_playing(self, out: list[Command]) -> None:
        """Pause whatever this player is being sent from the cache or a feed."""
        self.playing = False
        self.pending_end = None
        out.append(CancelTimer("eos"))
        if self.replay is not None:
            self.replay.pause()
            out.append(StopPlayout(self.replay))
        feed = self.feed
        if feed is not None and self.data is not None:
            feed.leave(self, self._viewer_sinks())
            if self.mode == "FEED":
                feed.viewers.add(self)  # a paused owner still holds the feed

    def _end_of_stream(self, hr: int, out: list[Command]) -> None:
        """Our own end of a play: 0x1E (delayed over MMSU), then ffmpeg's end marker (MMST)."""
        self.playing = False
        data = self.data
        if data is None:
            return
        if data.udp is not None:
            self.pending_end = hr
            out.append(SetTimer("eos", UDP_END_DELAY))
            return
        self._send_end(hr)

    def _send_end(self, hr: int) -> None:
        data, info = self.data, self.header_info
        assert data is not None and self.tcp is not None
        incarnation = self.play_cmd.play_incarnation if self.play_cmd else 4
        self._to_client(mms.ReportEndOfStream(hr=hr, play_incarnation=incarnation))
        if data.udp is None and info is not None:
            self.tcp.send(mms.build_data_packet(0, data.packet_id, 0, bytes(info.packet_size + 1)))

    def _notified(self, event: Notify, out: list[Command]) -> None:
        if event.topic == "wmt-replay-end" and self.mode == "HIT" and self.playing:
            if event.detail:
                out.append(Log("INFO", f"wmt: {self.client}: cached play ended: {event.detail}"))
                self._end_of_stream(mms.HResult.CONNECTION_LOST, out)
            else:
                self._end_of_stream(0, out)
        elif event.topic == FEED_START:
            self._feed_wait_over(out)
        elif event.topic == FEED_HANDOVER:
            self._take_over(out)
        elif event.topic == FEED_HANDED_OVER and self.background:
            self._shutdown(out, "live feed handed over")
        elif event.topic == "feed-ended" and self.mode == "SPLIT":
            self.feed = None
            if self.playing and not self.client_gone:
                lost = event.detail.startswith("live feed lost")
                self._send_end(mms.HResult.CONNECTION_LOST if lost else 0)
            self._shutdown(out, f"live feed ended: {event.detail}", drain=True)

    # -- timers ---------------------------------------------------------------------------

    def _timer(self, name: str, out: list[Command]) -> None:
        if name == "flush":
            self._flush_armed = False
            if self.data is not None:
                self.data.release()
        elif name == "eos":
            if self.pending_end is not None:
                hr, self.pending_end = self.pending_end, None
                self._send_end(hr)
        elif name == "idle":
            self._idle(out)
        elif name == "origin-response" and self.reconnecting is not None:
            if self.purpose is not None:
                self._origin_lost(out, "origin did not answer in time while reconnecting")
        elif name == "feed-reconnect" and self.reconnecting is not None:
            if self.origin_state == "closed":
                self._reconnect_timer(out)
        elif name == "origin-response" and self.purpose == "take_over":
            self._origin_lost(out, "origin did not answer the take-over in time")
        elif name == "origin-response" and self.purpose is not None:
            out.append(Log("WARNING", f"wmt: {self.client}: origin did not answer in time"))
            self._origin_failed(out, "origin did not answer in time", mms.HResult.TIMEOUT, 504)
        elif name == "feed-linger":
            self._feed_linger(out)
        elif name == "feed-wait":
            self._feed_wait_timeout(out)
        elif name == "fill-watchdog" and self.recorder is not None:
            silent = self.ctx.monotonic() - self.last_origin_data
            if silent >= FILL_IDLE_LIMIT:
                self._abort_fill(out, f"the origin sent nothing for {silent:.0f} s")
            else:
                out.append(SetTimer("fill-watchdog", FILL_IDLE_LIMIT - silent))

    def _idle(self, out: list[Command]) -> None:
        """Keep-alive: Ping a silent player, end one silent for ``session_timeout``."""
        if self.client_gone:
            return
        now = self.ctx.monotonic()
        if self.playing:
            self._last_heard = now  # streaming: the player is busy reading
        silent = now - self._last_heard
        if silent >= self._timeout:
            out.append(Log("INFO", f"wmt: {self.client}: silent for {silent:.0f} s"))
            self._shutdown(out, "timeout", status=408)
            return
        out.append(SetTimer("idle", self._timeout / 2))
        if silent >= self._timeout / 2 and not self._ping_out:
            self._ping_out = True
            self._to_client(mms.Ping())

    # -- sending ----------------------------------------------------------------------------

    def _to_client(self, cmd: mms.MmsCommand) -> None:
        """A command on the player's connection, in order with the MMST data (one sink)."""
        if self.client_gone or self.tcp is None:
            return
        stamp = max(0.0, self.ctx.monotonic() - self.t0)
        self.tcp.send(mms.build_command(cmd, sequence=self.seq, timestamp=stamp))
        self.seq += 1
        if self.data is not None:
            self.data.hold()

    def _to_origin(
        self, cmd: mms.MmsCommand, purpose: str | None, out: list[Command], *,
        serving: mms.MmsCommand | None = None,
    ) -> None:
        """A command to the origin; ``purpose`` names the reply we then wait for."""
        if self.origin is None or self.origin_state != "open":
            return
        stamp = max(0.0, self.ctx.monotonic() - self.t0)
        out.append(SendData(self.origin, mms.build_command(cmd, sequence=self.origin_seq,
                                                           timestamp=stamp)))
        self.origin_seq += 1
        if purpose is not None:
            self.purpose = purpose
            self.serving = serving
            out.append(SetTimer("origin-response", self.ctx.settings.origin_response_timeout))

    # -- the end ----------------------------------------------------------------------------

    def _client_gone(self, out: list[Command], reason: str) -> None:
        """The player left. A live feed others watch, or a fill worth finishing, goes on."""
        self.client_gone = True
        feed, splitter = self.feed, self.ctx.splitter
        if (
            feed is not None and self.mode == "FEED" and splitter is not None
            and (self.origin_state == "open" or self.reconnecting is not None)
            and (feed.viewers - {self} or splitter.linger > 0)
        ):
            feed.leave(self, self._viewer_sinks())
            self.background = True
            if self.reconnecting is not None and self.origin_state == "closed":
                out.append(CancelTimer("feed-reconnect"))  # never without a connection now
                self._reconnect_now(out)
            out.append(Log("INFO", f"wmt: {self.client}: left; its live feed goes on "
                           f"({len(feed.viewers)} viewers)"))
            self._emit_record(out, reason)
            self._begin_background_stats()
            out += [CancelTimer("idle"), SetTimer("feed-linger", 1.0)]
            splitter.hand_over(feed)
            return
        rec, cache = self.recorder, self.ctx.cache
        if rec is not None and cache is not None and self.origin_state == "open":
            readers = cache.readers.get(rec.fill.key, 0)
            duration = self.header_info.duration if self.header_info else 0.0
            progress = rec.received / duration if duration else 0.0
            if readers > 0 or progress >= cache.settings.background_fill:
                self.background = True
                out.append(Log("INFO", f"wmt: {self.client}: left during the fill; it goes on "
                               f"({readers} readers, {progress:.0%} received)"))
                self._emit_record(out, reason)
                self._begin_background_stats()
                out.append(CancelTimer("idle"))
                return
        self._shutdown(out, reason)

    def _begin_background_stats(self) -> None:
        """The player's record is written; the origin bytes of the fill that goes on without
        it are counted for one more record, written when the fill ends (same URL, variant and
        result, no bytes to the player), so every origin media byte is in some record."""
        done = self.stats
        self.stats = _Stats(
            start=self.ctx.clock(), url=done.url, status=done.status, result=done.result,
            variant=done.variant, user_agent=done.user_agent, background=True,
        )

    def _emit_record(self, out: list[Command], reason: str, status: int | None = None) -> None:
        stats = self.stats
        if stats.recorded:
            return
        sent = self.data.bytes_sent if self.data is not None and not stats.background else 0
        record = AccessRecord(
            start=stats.start,
            end=self.ctx.clock(),
            client=f"{self.client.peer[0]}:{self.client.peer[1]}",
            format=self.ctx.format_name,
            url=stats.url,
            status=status if status is not None else stats.status,
            result=stats.result,  # type: ignore[arg-type]
            variant=stats.variant,
            transport=stats.transport,
            bytes_to_client=sent,
            origin_bytes=stats.origin_bytes,
            session=str(self.client.id),
            reason=reason,
            user_agent=stats.user_agent,
        )
        stats.recorded = True
        out.append(EmitRecord(record))

    def _shutdown(
        self, out: list[Command], reason: str, *, status: int | None = None, drain: bool = False
    ) -> None:
        """Close everything: the origin session (CloseFile), the player, the record."""
        if self.closed:
            return
        if self.origin is not None and self.origin_state == "open" and self.opened is not None:
            self._to_origin(mms.CloseFile(play_incarnation=1), None, out)
        self.background = False
        self.playing = False
        if self.replay is not None:
            out.append(StopPlayout(self.replay))
            self.replay = None
            if self.ctx.cache is not None and self.cache_key is not None:
                self.ctx.cache.leave(self.cache_key)
        self._abort_fill(out, f"the session ended before the clip did ({reason})")
        self._stop_feed_use(out, "the feeding session ended")
        if self.data is not None and not self.client_gone:
            self.data.release()
        self._emit_record(out, reason, status)
        self.closed = True
        self.phase = Phase.CLOSED
        for name in ("idle", "origin-response", "feed-linger", "flush", "eos", "fill-watchdog",
                     "feed-reconnect"):
            out.append(CancelTimer(name))
        if self.origin is not None and self.origin_state in ("open", "connecting"):
            out.append(CloseConnection(self.origin))
        self.origin_state = "closed"
        out.append(CloseConnection(self.client, drain=drain))


def make_layer(ctx: SessionContext) -> MmsProxyLayer:
    """The ``wmt`` format's layer for one client connection (``mediacache_make_layer``)."""
    return MmsProxyLayer(ctx)
