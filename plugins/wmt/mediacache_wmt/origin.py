"""The reference MMS origin: .wmv/.asf files under a root, served over MMST and MMSU. Sans-I/O.

No open-source Windows Media server exists, so the proxy's tests need this one. It speaks the
server side of [MS-MMSP] the way ffmpeg's ``mmst`` and VLC's ``mmstu`` clients exercise it.
The core runs it (``mediacache origin wmt --root DIR --listen HOST:PORT``): one
:class:`MmsOriginLayer` per client connection, and what the connections share (the session
count, the clip cache, the live clock) in one :class:`OriginState` made by
:func:`reference_origin`. Files are read through :class:`MediaLibrary`, the layer's only
access to the disk, so playbook tests can hand it clips from memory.

Theory of operation
-------------------
The session is a state machine; :data:`ACCEPTS` is its whole transition table (which client
messages each phase accepts)::

    START --Connect 0x01--> CONNECTED --ConnectFunnel 0x02--> FUNNEL --OpenFile 0x05--> OPEN
                                                                 |  (credentials needed)
                                                                 +--> CHALLENGED --0x1A--> OPEN
    OPEN: ReadBlock 0x15 (header), StreamSwitch 0x33, StartPlaying 0x07, StopPlaying 0x09

A message another phase expects is out of order: it gets the reply it would have had, with
``hr`` E_UNEXPECTED, then a lingering close. Bytes that are not MMS framing (wrong signature,
absurd length, a data packet from a player) get a lingering close. CloseFile (0x0D) ends the
session; Pong (0x1B) and Logging (0x32) are fine in any phase after Connect.

Data packets are paced by their ASF send time, in real time: packet *k* is due at
``epoch + send_time[k]``, and one timer (``pace``) is armed for the next due packet. MMST data
goes on the control connection as ``SendData`` (in order with the commands: 0x05 before the
first packet, 0x1E after the last); MMSU data, header parts included ([MS-MMSP] 3.2.5.8.1), goes
to the client's UDP port through a sink of the format's shared UDP sockets. Only the payloads
of the streams selected with 0x33 are sent (``asf.filter_streams``); a packet left empty is
not sent at all (3.2.5.11.1).

A file under ``ROOT/live/`` is a live broadcast: the header carries the broadcast flag (ffmpeg
then reads on past the Data Object's size), 0x06 says broadcast (VLC: not seekable), and the
clip loops forever on one clock shared by every viewer of the origin. A viewer joins "now":
at the packet where the latest video key frame before the current position starts (the packets
up to now come as a burst, then real time). Each pass of the loop has its send and presentation
times moved on by the clip's period (``asf.shift_times``), so players see time go forward.

Quirks that players impose
--------------------------
* ffmpeg 5.1 never ends an ``mmst`` input on 0x1E or on a closed socket (it retries a 0-byte
  read forever); a data packet longer than the ASF packet size is what it ends on. After the
  last packet of a clip over MMST the origin sends 0x1E and then such a packet.
* VLC reads 0x06's ``openFileId`` as "1 = file ok, 2 = authentication ok, else error" and
  ignores ``hr``: error replies carry ``openFileId`` 0.
* Over MMSU, VLC parses buffered TCP before UDP, and waits for a reply by polling the
  sockets *before* looking at what it has buffered. A datagram that overtakes the command it
  belongs after breaks it both ways: header parts ahead of 0x11 leave 0x11 buffered, and the
  0x21 that arrives with it is never looked at (VLC gives up after ten 5 s polls: "unknown
  answer (0x11 instead of 0x21)"); a 0x1E right behind the last datagram can overtake it. So
  over UDP the header parts and the first data packet go out on a timer after 0x11 and 0x05
  have been written, and 0x1E follows the last packet after a short delay.
* Players answer a Ping (0x1B) with a Pong and VLC sends Pongs of its own while paused: an
  unsolicited Pong is echoed with one Ping, and the Pong answering that Ping is not echoed.
* Neither ffmpeg nor VLC can authenticate (VLC: "id/password requested (not yet supported)").
  ``auth`` is [MS-MMSP] 4.6.1 Basic: 0x01 announces ``BASIC``, 0x05 is answered with a
  SecurityChallenge (UTF-16 ``realm="..."``), and a SecurityResponse carrying
  ``base64(user:pass)`` (NUL-terminated ASCII, as RFC 2617 basic-credentials) opens the file.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import enum
import hmac
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final
from urllib.parse import unquote

from mediacache import origin as core_origin
from mediacache.formats import OriginOptions
from mediacache.logs import AccessRecord
from mediacache.sansio.commands import (
    CancelTimer,
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    SendData,
    SetTimer,
)
from mediacache.sansio.events import ConnectionClosed, DataReceived, Event, Start, TimerFired
from mediacache.sansio.layer import SessionContext, Sink
from mediacache_wmt.errors import MmsProtocolError
from mediacache_wmt.wire import asf, mms

__all__ = [
    "ACCEPTS",
    "LIVE_DIR",
    "MEDIA_SUFFIXES",
    "MediaFile",
    "MediaLibrary",
    "MmsOriginLayer",
    "OriginState",
    "Phase",
    "basic_token",
    "error_reply",
    "reference_origin",
]

MEDIA_SUFFIXES: Final = frozenset({".wmv", ".asf", ".wma"})
LIVE_DIR: Final = core_origin.LIVE_DIR
REALM: Final = "mediacache"
LEAD: Final = 0.01
"""Packets due within this many seconds go now: one timer run sends a batch, not one packet."""
UDP_END_DELAY: Final = 0.3
BACKOFF: Final = 0.05
"""How long playout waits while the client's TCP send buffer is over its high-water mark."""
MAX_AUTH_TRIES: Final = 3


class Phase(enum.Enum):
    """Where a session is in the [MS-MMSP] sequence."""

    START = "start"
    CONNECTED = "connected"
    FUNNEL = "funnel"
    CHALLENGED = "challenged"
    OPEN = "open"
    CLOSED = "closed"


_ANY_TIME: Final = frozenset({mms.Pong, mms.Logging, mms.CloseFile})
ACCEPTS: Final[dict[Phase, frozenset[type[mms.MmsCommand]]]] = {
    Phase.START: frozenset({mms.Connect}),
    Phase.CONNECTED: _ANY_TIME | {mms.FunnelInfo, mms.ConnectFunnel},
    Phase.FUNNEL: _ANY_TIME | {mms.FunnelInfo, mms.OpenFile},
    Phase.CHALLENGED: _ANY_TIME | {mms.SecurityResponse},
    Phase.OPEN: _ANY_TIME | {
        mms.FunnelInfo, mms.ReadBlock, mms.StreamSwitch, mms.StartPlaying, mms.StopPlaying,
        mms.StartStriding,
    },
    Phase.CLOSED: frozenset(),
}
"""The transition table: the client messages each phase accepts; anything else is out of order."""


# --- clips --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class MediaFile:
    """One clip as the origin serves it: the header it sends, its packets and their timing."""

    name: str
    header: asf.AsfHeader
    header_bytes: bytes
    """What ReadBlock sends: the file's header, or for live its broadcast version."""
    packets: tuple[bytes, ...]
    offsets_ms: tuple[int, ...]
    """Send time of each packet less the first packet's."""
    key_packets: tuple[int, ...]
    """Indexes of the packets where a video key frame starts (every packet without video)."""
    period_ms: int
    """One pass of the clip: how far apart two loops of a live broadcast are."""
    live: bool

    @classmethod
    def from_bytes(cls, name: str, data: bytes, *, live: bool = False) -> MediaFile:
        """Parse an ASF file; raises MmsProtocolError when it is not one MMS can carry."""
        h = asf.parse_asf_header(data)
        if h.data is None:
            raise MmsProtocolError(f"{name}: no Data Object after the ASF header")
        packets = tuple(asf.iter_data_packets(data[h.data_offset :], h.packet_size, h.packet_count))
        if not packets:
            raise MmsProtocolError(f"{name}: no data packets")
        video = {s.number for s in h.streams if s.kind == "video"}
        times, keys, last_duration = [], [], 0
        for i, packet in enumerate(packets):
            parsed = asf.parse_data_packet(packet, h.packet_size)
            times.append(parsed.send_time)
            last_duration = parsed.duration
            if not video or any(
                p.key_frame and p.starts_media_object and p.stream_number in video
                for p in parsed.payloads
            ):
                keys.append(i)
        first = times[0]
        offsets = tuple(t - first for t in times)
        period = max(offsets[-1] + max(last_duration, 1), round(h.duration * 1000))
        return cls(
            name=name,
            header=h,
            header_bytes=_broadcast_header(h) if live else h.raw,
            packets=packets,
            offsets_ms=offsets,
            key_packets=tuple(keys) or (0,),
            period_ms=period,
            live=live,
        )

    def index_at(self, ms: float) -> int:
        """The last packet sent at or before ``ms`` into the clip."""
        return max(0, bisect.bisect_right(self.offsets_ms, ms) - 1)

    def key_at_or_before(self, index: int) -> int:
        """Where a player starting at ``index`` can decode from: the key frame before it."""
        k = bisect.bisect_right(self.key_packets, index) - 1
        return self.key_packets[k] if k >= 0 else 0

    @property
    def has_video(self) -> bool:
        return any(s.kind == "video" for s in self.header.streams)


def _broadcast_header(h: asf.AsfHeader) -> bytes:
    """``h`` as a live encoder would send it: broadcast flag, no sizes, counts or durations.

    ffmpeg stops at the Data Object's size unless the broadcast flag is set; VLC treats a Data
    Object of 50 bytes as live. Both then read a looped clip forever.
    """
    fp = h.file_properties
    live_fp = replace(
        fp, flags=(fp.flags | 0x01) & ~0x02, file_size=0, data_packets_count=0,
        play_duration=0, send_duration=0,
    )
    objects = [live_fp if o is fp else o for o in h.objects]
    data = h.data and replace(h.data, total_data_packets=0, size=asf.DATA_OBJECT_HEADER_SIZE)
    return asf.build_asf_header(objects, data=data)


def _url_path(name: str) -> str:
    """A player's ``fileName`` as a path: percent-escapes decoded, the query dropped."""
    return unquote(name.split("?", 1)[0])


def _parse_clip(name: str, data: bytes, live: bool) -> MediaFile:
    return MediaFile.from_bytes(name, data, live=live)


class MediaLibrary(core_origin.MediaLibrary[MediaFile]):
    """The Windows Media clips under ``root`` (:class:`mediacache.origin.MediaLibrary`).

    A name is a URL path: percent-escapes are decoded and a query is dropped. :meth:`open`
    raises LookupError if there is no such clip, MmsProtocolError if it is not ASF.
    """

    def __init__(self, root: Path | str) -> None:
        super().__init__(
            root, MEDIA_SUFFIXES, _parse_clip, kind="Windows Media", what="file name",
            decode=_url_path,
        )


# --- state shared by the connections of one origin ---------------------------------------------


@dataclass
class OriginState(core_origin.OriginState[MediaLibrary, tuple[str, str]]):
    """What every connection of one origin shares (:class:`mediacache.origin.OriginState`)."""

    _client_ids: int = 0

    @classmethod
    def make_library(cls, root: Path) -> MediaLibrary:
        return MediaLibrary(root)

    def next_client_id(self) -> int:
        self._client_ids += 1
        return self._client_ids

    def check(self, token: bytes) -> bool:
        """Do Basic credentials (``base64(user:pass)``, NUL-terminated, maybe ``Basic ``) match?"""
        if self.credentials is None:
            return True
        text = token.split(b"\x00", 1)[0].strip()
        if text[:6].lower() == b"basic ":
            text = text[6:].strip()
        try:
            user, sep, password = base64.b64decode(text, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            return False
        want_user, want_password = self.credentials
        return bool(sep) & hmac.compare_digest(user.encode(), want_user.encode()) & (
            hmac.compare_digest(password.encode(), want_password.encode())
        )


def basic_token(user: str, password: str) -> bytes:
    """The SecurityResponse / OpenFile token a client sends for Basic authentication."""
    return base64.b64encode(f"{user}:{password}".encode()) + b"\x00"


def reference_origin(options: OriginOptions) -> Callable[[SessionContext], MmsOriginLayer]:
    """The layer factory of one origin, shared state inside (``mediacache_reference_origin``)."""
    state = OriginState.from_options(options)

    def make_layer(ctx: SessionContext) -> MmsOriginLayer:
        return MmsOriginLayer(ctx, state)

    return make_layer


# --- one viewer's playout -------------------------------------------------------------------------


@dataclass(slots=True)
class _Play:
    """Where one StartPlaying is: virtual packet index on a clock (VOD: its own; live: shared)."""

    media: MediaFile
    keep: frozenset[int] | None  # None: every stream, packets go out untouched
    packet_id: int
    incarnation: int
    epoch: float  # monotonic time at which clip time 0 of loop 0 is due
    index: int
    _peeked: tuple[float, int, bytes] | None = None

    def peek(self) -> tuple[float, int, bytes] | None:
        """(due time, LocationId, ASF packet) of the next packet to send; None at the end."""
        if self._peeked is not None:
            return self._peeked
        media = self.media
        n = len(media.packets)
        size = media.header.packet_size
        skipped = 0
        while media.live or self.index < n:
            loop, i = divmod(self.index, n)
            payload: bytes | None = media.packets[i]
            if self.keep is not None:
                payload = asf.filter_streams(media.packets[i], self.keep, size)
            if payload is None:  # nothing of the selected streams in it: not sent at all
                self.index += 1
                skipped += 1
                if skipped > n:  # a whole loop without the selected streams: nothing to send
                    return None
                continue
            shift = loop * media.period_ms
            if shift:
                payload = asf.shift_times(payload, shift, size)
            due = self.epoch + (shift + media.offsets_ms[i]) / 1000
            self._peeked = (due, self.index, payload)
            return self._peeked
        return None

    def advance(self) -> None:
        self._peeked = None
        self.index += 1


# --- the layer ------------------------------------------------------------------------------------


def error_reply(cmd: mms.MmsCommand, hr: int) -> mms.MmsCommand | None:
    """The reply ``cmd`` would get, carrying the error ``hr`` (None: it has no reply)."""
    incarnation = getattr(cmd, "play_incarnation", 0)
    match cmd:
        case mms.Connect():
            return mms.ReportConnectedEx(hr=hr, play_incarnation=incarnation)
        case mms.FunnelInfo():
            return mms.ReportFunnelInfo(hr=hr, play_incarnation=incarnation)
        case mms.ConnectFunnel():
            return mms.ReportDisconnectedFunnel(hr=hr, play_incarnation=incarnation)
        case mms.OpenFile() | mms.SecurityResponse():
            return mms.ReportOpenFile(hr=hr, play_incarnation=incarnation, open_file_id=0)
        case mms.ReadBlock():
            return mms.ReportReadBlock(hr=hr, play_incarnation=incarnation)
        case mms.StreamSwitch():
            return mms.ReportStreamSwitch(hr=hr)
        case mms.StartPlaying():
            return mms.ReportStartedPlaying(hr=hr, play_incarnation=incarnation)
        case mms.StartStriding():
            return mms.ReportStartStriding(hr=hr, play_incarnation=incarnation)
        case mms.StopPlaying():
            return mms.ReportEndOfStream(hr=hr, play_incarnation=incarnation)
    return None


class MmsOriginLayer:
    """One player's MMS session with the reference origin (see the module docstring)."""

    def __init__(self, ctx: SessionContext, state: OriginState) -> None:
        self.ctx = ctx
        self.state = state
        self.phase = Phase.START
        self.reader = mms.MmsStreamReader(max_command_size=64 * 1024, commands_only=True)
        self.media: MediaFile | None = None
        self.selected: frozenset[int] | None = None
        self.udp: Sink | None = None
        self.play: _Play | None = None
        self.client_id = state.next_client_id()
        self.url = ""
        self.user_agent = ""
        self.transport = ""
        self.status = 200
        self.bytes_sent = 0
        self._seq = 0
        self._udp_seq = 0
        self._holds_slot = False
        self._recorded = False
        self._cookie = 0
        self._auth_tries = 0
        self._ping_outstanding = False
        self._pending_end: int | None = None  # incarnation of a 0x1E waiting for "eos" (UDP)
        self._pending_header: list[bytes] = []  # header parts waiting for "header" (UDP)
        self._t0 = 0.0
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
        if isinstance(event, TimerFired):
            if self.phase is Phase.CLOSED:
                return []
            if event.name == "pace":
                return self._pump()
            if event.name == "eos":
                return self._send_end()
            if event.name == "header":
                parts, self._pending_header = self._pending_header, []
                return self._send_data(parts)
            if event.name == "idle":
                return self._idle()
            return []
        if isinstance(event, ConnectionClosed):
            if event.conn is not self.ctx.client or self.phase is Phase.CLOSED:
                return []
            self.phase = Phase.CLOSED
            self.play = None
            return self._finish(event.error or "client closed")
        if isinstance(event, Start):
            self._t0 = self._last_heard = self.ctx.monotonic()
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
                if isinstance(message, mms.MmsDataPacket):
                    raise MmsProtocolError("a player sent a data packet")
                self._last_heard = self.ctx.monotonic()
                out += self._command(message)
        except MmsProtocolError as exc:
            out.append(Log("WARNING", f"wmt origin: {self.ctx.client}: {exc}"))
            out += self._close(f"protocol error: {exc}", 400, drain=True)
        return out

    def _command(self, cmd: mms.MmsCommand) -> list[Command]:
        if isinstance(cmd, mms.UnknownCommand):
            if cmd.direction is mms.Direction.TO_CLIENT:
                raise MmsProtocolError(f"a player sent server message 0x{cmd.mid:08x}")
            return [Log("INFO", f"wmt origin: ignored MMS message 0x{cmd.mid:08x}")]
        if cmd.direction is mms.Direction.TO_CLIENT:
            raise MmsProtocolError(f"a player sent server message {type(cmd).__name__}")
        if type(cmd) not in ACCEPTS[self.phase]:
            reply = error_reply(cmd, mms.HResult.UNEXPECTED)
            out = [self._reply(reply)] if reply is not None else []
            out.append(Log(
                "WARNING",
                f"wmt origin: {self.ctx.client}: {type(cmd).__name__} out of order "
                f"in phase {self.phase.value}",
            ))
            return out + self._close(f"{type(cmd).__name__} out of order", 400, drain=True)
        handler = getattr(self, f"_on_{type(cmd).__name__}")
        result: list[Command] = handler(cmd)
        return result

    # -- the handshake ----------------------------------------------------------------------

    def _on_Connect(self, cmd: mms.Connect) -> list[Command]:
        self.user_agent = cmd.subscriber_name.split(";", 1)[0].strip()
        if not self.state.acquire():
            reply = mms.ReportConnectedEx(
                hr=mms.HResult.TOO_MANY_SESSIONS, play_incarnation=cmd.play_incarnation
            )
            log = Log("WARNING", f"wmt origin: refused {self.ctx.client}: "
                      f"{self.state.max_sessions} sessions in use")
            return [self._reply(reply), log, *self._close("too many sessions", 453, drain=True)]
        self._holds_slot = True
        self.phase = Phase.CONNECTED
        return [self._reply(mms.ReportConnectedEx(
            play_incarnation=cmd.play_incarnation,
            authen_package="BASIC" if self.state.credentials else "",
        ))]

    def _on_FunnelInfo(self, cmd: mms.FunnelInfo) -> list[Command]:
        return [self._reply(mms.ReportFunnelInfo(
            play_incarnation=cmd.play_incarnation, client_id=self.client_id
        ))]

    def _on_ConnectFunnel(self, cmd: mms.ConnectFunnel) -> list[Command]:
        transport = cmd.transport
        refuse = mms.ReportDisconnectedFunnel(
            hr=mms.HResult.NOT_IMPLEMENTED, play_incarnation=cmd.play_incarnation
        )
        if transport is None:
            return [self._reply(replace(refuse, hr=mms.HResult.INVALID_ARGUMENT))]
        _, kind, port = transport
        if kind == "UDP":
            try:
                # [MS-MMSP]: the address in the funnel name is ignored; UDP goes to the host of
                # the TCP connection
                self.udp = self.ctx.dataplane.udp_sink((self.ctx.client.peer[0], port), rtcp=False)
            except RuntimeError:  # the format has no UDP ports: MMSU is refused (0x03)
                return [self._reply(refuse),
                        Log("INFO", f"wmt origin: refused UDP for {self.ctx.client}: no UDP ports")]
        self.transport = "MMSU" if kind == "UDP" else "MMST"
        self.phase = Phase.FUNNEL
        return [self._reply(mms.ReportConnectedFunnel(play_incarnation=cmd.play_incarnation))]

    def _on_OpenFile(self, cmd: mms.OpenFile) -> list[Command]:
        self.url = cmd.file_name
        try:
            self.media = self.state.library.open(cmd.file_name)
        except (LookupError, MmsProtocolError) as exc:
            not_found = isinstance(exc, LookupError)
            hr = mms.HResult.FILE_NOT_FOUND if not_found else mms.HResult.UNEXPECTED
            reply = mms.ReportOpenFile(hr=hr, play_incarnation=cmd.play_incarnation, open_file_id=0)
            log = Log("WARNING", f"wmt origin: {self.ctx.client}: {exc}")
            status = 404 if not_found else 415
            return [self._reply(reply), log, *self._close(str(exc), status, drain=True)]
        self.selected = None
        if self.state.credentials is None or (cmd.token_data and self.state.check(cmd.token_data)):
            return self._report_open(cmd.play_incarnation)
        return self._challenge(cmd.play_incarnation)

    def _challenge(self, incarnation: int) -> list[Command]:
        self.phase = Phase.CHALLENGED
        self.status = 401  # until the credentials are right
        old = self._cookie
        while self._cookie in (old, 0):  # a new cookie names this challenge
            self._cookie = secrets.randbits(32)
        token = f'realm="{REALM}"'.encode("utf-16-le") + b"\x00\x00"
        return [self._reply(mms.SecurityChallenge(
            token=token, play_incarnation=incarnation, cookie=self._cookie
        ))]

    def _on_SecurityResponse(self, cmd: mms.SecurityResponse) -> list[Command]:
        if cmd.cookie == self._cookie and self.state.check(cmd.token):
            return self._report_open(cmd.play_incarnation)
        self._auth_tries += 1
        if self._auth_tries < MAX_AUTH_TRIES:
            return self._challenge(cmd.play_incarnation)
        reply = mms.ReportOpenFile(
            hr=mms.HResult.ACCESS_DENIED, play_incarnation=cmd.play_incarnation, open_file_id=0
        )
        log = Log("WARNING", f"wmt origin: {self.ctx.client}: bad credentials for {self.url}")
        return [self._reply(reply), log, *self._close("bad credentials", 401, drain=True)]

    def _report_open(self, incarnation: int) -> list[Command]:
        media = self.media
        assert media is not None
        h = media.header
        self.phase = Phase.OPEN
        self.status = 200
        if media.live:
            attributes, duration, count = mms.FileAttributes.BROADCAST, 0.0, 0
        else:
            attributes = mms.FileAttributes.CAN_SEEK
            if media.has_video:
                attributes |= mms.FileAttributes.CAN_STRIDE
            duration, count = h.duration, len(media.packets)
        return [
            self._reply(mms.ReportOpenFile(
                play_incarnation=incarnation,
                open_file_id=1,
                file_attributes=int(attributes),
                file_duration=duration,
                file_blocks=mms.file_blocks_for(duration),
                file_packet_size=h.packet_size,
                file_packet_count=count,
                file_bit_rate=h.file_properties.max_bitrate,
                file_header_size=len(media.header_bytes),
            )),
            Log("INFO", f"wmt origin: {self.ctx.client} opened {media.name} over "
                f"{self.transport}{' (live)' if media.live else ''}"),
        ]

    # -- reading ----------------------------------------------------------------------------

    def _on_ReadBlock(self, cmd: mms.ReadBlock) -> list[Command]:
        media = self.media
        assert media is not None
        packet_id = cmd.play_incarnation & 0xFF
        parts = mms.header_packets(
            media.header_bytes, packet_id=packet_id,
            max_payload=min(media.header.packet_size, 0xFFFF - mms.DATA_PACKET_HEADER_SIZE),
        )
        out = [self._reply(mms.ReportReadBlock(play_incarnation=cmd.play_incarnation))]
        if self.udp is not None:  # after 0x11 has left (see the module docstring on VLC)
            self._pending_header = parts
            return [*out, SetTimer("header", 0)]
        return out + self._send_data(parts)

    def _on_StreamSwitch(self, cmd: mms.StreamSwitch) -> list[Command]:
        media = self.media
        assert media is not None
        known = media.header.stream_numbers
        wanted = cmd.selected
        if not wanted or any(e.dst not in known for e in cmd.entries):
            return [self._reply(mms.ReportStreamSwitch(hr=mms.HResult.INVALID_ARGUMENT))]
        # Thinning.KEY_FRAMES is served as ALL: the selection is per stream only
        self.selected = None if wanted == known else frozenset(wanted)
        return [self._reply(mms.ReportStreamSwitch())]

    def _on_StartPlaying(self, cmd: mms.StartPlaying) -> list[Command]:
        media = self.media
        assert media is not None
        out = self._stop_timers()
        now = self.ctx.monotonic()
        if media.live:
            epoch = self.state.live_clock(now)
            loop, within = divmod((now - epoch) * 1000, media.period_ms)
            start = int(loop) * len(media.packets) + media.key_at_or_before(media.index_at(within))
        else:
            if cmd.location_id != 0xFFFFFFFF:
                first = min(cmd.location_id, len(media.packets))
            elif cmd.position > 0:
                first = media.key_at_or_before(media.index_at(cmd.position * 1000))
            else:
                first = 0
            start = first
            offset = media.offsets_ms[first] if first < len(media.packets) else media.period_ms
            epoch = now - offset / 1000
        self.play = _Play(
            media, self.selected, cmd.packet_id, cmd.play_incarnation, epoch, start
        )
        out.append(self._reply(mms.ReportStartedPlaying(play_incarnation=cmd.play_incarnation)))
        if self.udp is not None:  # the first datagram after 0x05 has left
            return [*out, SetTimer("pace", 0)]
        return out + self._pump()

    def _on_StopPlaying(self, cmd: mms.StopPlaying) -> list[Command]:
        incarnation = self.play.incarnation if self.play is not None else cmd.play_incarnation
        out = self._stop_timers()
        self.play = None
        return [*out, self._reply(mms.ReportEndOfStream(play_incarnation=incarnation))]

    def _on_StartStriding(self, cmd: mms.StartStriding) -> list[Command]:
        return [self._reply(mms.ReportStartStriding(
            hr=mms.HResult.NOT_IMPLEMENTED, play_incarnation=cmd.play_incarnation
        ))]

    def _on_CloseFile(self, cmd: mms.CloseFile) -> list[Command]:
        return self._close("closed by the player", self.status)

    def _on_Pong(self, cmd: mms.Pong) -> list[Command]:
        if self._ping_outstanding:  # the answer to our Ping
            self._ping_outstanding = False
            return []
        self._ping_outstanding = True
        return [self._reply(mms.Ping(param1=cmd.param1, param2=cmd.param2))]

    def _on_Logging(self, cmd: mms.Logging) -> list[Command]:
        return []

    # -- sending ----------------------------------------------------------------------------

    def _reply(self, cmd: mms.MmsCommand) -> SendData:
        data = mms.build_command(
            cmd, sequence=self._seq, timestamp=max(0.0, self.ctx.monotonic() - self._t0)
        )
        self._seq += 1
        return SendData(self.ctx.client, data)

    def _send_data(self, packets: Iterable[bytes]) -> list[Command]:
        """Data packets to the player: one SendData over MMST, datagrams over MMSU."""
        if self.udp is None:
            data = b"".join(packets)
            self.bytes_sent += len(data)
            return [SendData(self.ctx.client, data)] if data else []
        for packet in packets:
            self.udp.send(packet)
            self.bytes_sent += len(packet)
        return []

    def _pump(self) -> list[Command]:
        """Send every packet due by now; arm ``pace`` for the next one, or end the stream."""
        play = self.play
        if play is None:
            return []
        now = self.ctx.monotonic()
        batch: list[bytes] = []
        wake: Command | None = None
        tcp = self.udp is None
        while True:
            if tcp and not self.ctx.dataplane.client_writable(self.ctx.client):
                wake = SetTimer("pace", BACKOFF)
                break
            item = play.peek()
            if item is None:
                break
            due, location, payload = item
            if due > now + LEAD:
                wake = SetTimer("pace", due - now)
                break
            play.advance()
            # AFFlags: 0 over TCP (Wireshark's heuristic reads only 0/4/8/0xC/0x10 there), the
            # low byte of a packet counter over UDP ([MS-MMSP] 3.2.5.11.1)
            flags = 0
            if not tcp:
                flags = self._udp_seq & 0xFF
                self._udp_seq += 1
            batch.append(
                mms.build_data_packet(location & 0xFFFFFFFF, play.packet_id, flags, payload)
            )
            if tcp and len(batch) >= 64:
                break
        out = self._send_data(batch)
        if wake is not None:
            out.append(wake)
        elif play.peek() is None:
            out += self._end_of_clip(play)
        else:  # a full TCP batch: the rest right away, after the loop has had a turn
            out.append(SetTimer("pace", 0))
        return out

    def _end_of_clip(self, play: _Play) -> list[Command]:
        self.play = None
        if self.udp is not None:
            self._pending_end = play.incarnation
            return [SetTimer("eos", UDP_END_DELAY)]
        end = self._reply(mms.ReportEndOfStream(play_incarnation=play.incarnation))
        # ffmpeg 5.1 ends an mmst input only on a data packet longer than the ASF packet size
        # (see the module docstring); VLC has stopped reading at 0x1E
        trailer = mms.build_data_packet(
            0, play.packet_id, 0, bytes(play.media.header.packet_size + 1)
        )
        return [end, SendData(self.ctx.client, trailer)]

    def _send_end(self) -> list[Command]:
        if self._pending_end is None:
            return []
        incarnation, self._pending_end = self._pending_end, None
        return [self._reply(mms.ReportEndOfStream(play_incarnation=incarnation))]

    def _stop_timers(self) -> list[Command]:
        self._pending_end = None
        return [CancelTimer("pace"), CancelTimer("eos")]

    def _idle(self) -> list[Command]:
        """Keep-alive: Ping a silent player, drop one silent for ``session_timeout``."""
        now = self.ctx.monotonic()
        if self.play is not None:
            self._last_heard = now  # streaming: the player is busy reading
        silent = now - self._last_heard
        if silent >= self._timeout:
            return self._close(f"silent for {silent:.0f} s", 408)
        out: list[Command] = [SetTimer("idle", self._timeout / 2)]
        if silent >= self._timeout / 2 and not self._ping_outstanding:
            self._ping_outstanding = True
            out.append(self._reply(mms.Ping()))
        return out

    # -- the end ----------------------------------------------------------------------------

    def _close(
        self, reason: str, status: int, *, drain: bool = False, abort: bool = False
    ) -> list[Command]:
        if self.phase is Phase.CLOSED:
            return []
        self.phase = Phase.CLOSED
        self.play = None
        self.status = status
        return [
            *self._stop_timers(),
            CancelTimer("idle"),
            CloseConnection(self.ctx.client, abort=abort, drain=drain),
            *self._finish(reason),
        ]

    def _finish(self, reason: str) -> list[Command]:
        """Give the slot back and write the one access record of this session."""
        if self._holds_slot:
            self._holds_slot = False
            self.state.release()
        if self._recorded:
            return []
        self._recorded = True
        variant = "" if self.selected is None else ",".join(map(str, sorted(self.selected)))
        record = AccessRecord(
            start=self._start or self.ctx.clock(),
            end=self.ctx.clock(),
            client=self.ctx.client.peer[0],
            format=self.ctx.format_name,
            url=self.url,
            status=self.status,
            variant=variant,
            transport=self.transport,
            bytes_to_client=self.bytes_sent,
            session=str(self.client_id),
            reason=reason,
            user_agent=self.user_agent,
        )
        return [EmitRecord(record)]

