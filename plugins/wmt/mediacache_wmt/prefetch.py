"""Prefetch of Windows Media clips: fill the cache without a viewer, through a viewer's MISS path.

The core's prefetcher (:mod:`mediacache.server.prefetch`) speaks RTSP, which an MMS listener
does not. This is the same idea speaking MMS: an MMST client of the proxy's own listener that
does what a player does (Connect, FunnelInfo, ConnectFunnel for TCP data, OpenFile, ReadBlock for
the header, StreamSwitch, StartPlaying), reads the clip to its end (0x1E with ``hr`` 0, then the
data end marker the proxy sends after it), discards the media and leaves with CloseFile. The
proxy sees a player like any other, so the fill, the validators and the access-log record are
those of an ordinary miss.

What is played is chosen by StreamSwitch, which is also the cache variant: every stream of the
header by default (the variant an ffmpeg player gets), or one Intelligent Streaming selection.

OpenFile names the whole URL, as a player configured with an MMS proxy does: the proxy's
routing (:mod:`mediacache_wmt.routing`) then takes a URL on its own port through the matching
reverse route and any other URL as a forward request to that origin. The Connect string is an
NSPlayer one with a ``UserAgent: mediacache-prefetch`` part, which the layer records as the user
agent (the origin, which gets the Connect string passed on, sees a player it knows).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar
from urllib.parse import urlsplit

from mediacache.errors import ProtocolError
from mediacache.server.prefetch import USER_AGENT, PrefetchResult
from mediacache_wmt.errors import MmsProtocolError
from mediacache_wmt.routing import MMS_SCHEMES
from mediacache_wmt.wire import asf, mms

__all__ = ["SUBSCRIBER", "prefetch_mms"]

REPLY_TIMEOUT: Final = 30.0
"""Longest wait for one reply (or the whole header): the proxy may first have to reach the
origin, whose own connect and response timeouts are shorter."""
END_MARKER_WAIT: Final = 2.0
"""How long to wait, after 0x1E, for the data end marker the proxy sends over MMST."""
DATA_PACKET_ID: Final = 5
"""Our packet id for data packets (ffmpeg's and VLC's): the proxy stamps it on what it sends."""
CLIENT_GUID: Final = "{6D656469-6163-6163-6865-70726566E7C8}"
"""A fixed client GUID (players send a per-install one)."""
SUBSCRIBER: Final = f"NSPlayer/7.0.0.1956; {CLIENT_GUID}; UserAgent: {USER_AGENT}"
"""The Connect string without its ``Host:`` part: an origin sees the player it knows, and the
proxy records the ``UserAgent:`` part."""

C = TypeVar("C", bound=mms.MmsCommand)


class PrefetchFailed(Exception):
    """A step the proxy refused or answered wrongly; the message is the result's detail."""


def _hr(hr: int) -> str:
    """``hr`` as Windows Media tools print it, with the name when it is a known one."""
    try:
        return f"hr 0x{hr:08X} ({mms.HResult(hr).name})"
    except ValueError:
        return f"hr 0x{hr:08X}"


@dataclass
class _MmsClient:
    """A minimal asyncio MMST player: commands out, commands and data packets in."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    framer: mms.MmsStreamReader = field(default_factory=mms.MmsStreamReader)
    seq: int = 0
    t0: float = field(default_factory=time.monotonic)
    media_bytes: int = 0
    packets: int = 0

    def send(self, cmd: mms.MmsCommand) -> None:
        stamp = time.monotonic() - self.t0
        self.writer.write(mms.build_command(cmd, sequence=self.seq, timestamp=stamp))
        self.seq += 1

    async def next(self, timeout: float) -> mms.MmsCommand | mms.MmsDataPacket:
        """The next packet within ``timeout`` s; Pings are answered here (never returned)."""
        deadline = time.monotonic() + timeout
        while True:
            event = self.framer.next_event()
            if isinstance(event, mms.Ping):
                self.send(mms.Pong(event.param1, event.param2))
                continue
            if event is not None:
                return event
            if self.framer.at_eof:
                raise ConnectionError("the proxy closed the connection")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply in time")
            data = await asyncio.wait_for(self.reader.read(65536), left)
            self.framer.receive_data(data)

    async def ask(self, what: str, cmd: mms.MmsCommand, reply: type[C]) -> C:
        """Send ``cmd``; its reply (a ``reply`` with ``hr`` 0) within :data:`REPLY_TIMEOUT`.

        Data packets before the reply are stray (none is due before it) and dropped.
        """
        self.send(cmd)
        deadline = time.monotonic() + REPLY_TIMEOUT
        while True:
            event = await self.next(deadline - time.monotonic())
            if isinstance(event, mms.MmsDataPacket):
                continue
            if isinstance(event, mms.SecurityChallenge):
                raise PrefetchFailed(f"{what}: the clip needs credentials (never cached)")
            if isinstance(event, mms.ReportRedirect):
                raise PrefetchFailed(f"{what}: redirected to {event.location}")
            if not isinstance(event, reply):
                raise PrefetchFailed(
                    f"{what}: expected {reply.__name__}, got {type(event).__name__}"
                )
            hr = getattr(event, "hr", 0)
            if hr:
                raise PrefetchFailed(f"{what}: {_hr(hr)}")
            return event

    async def read_header(self) -> bytes:
        """ReadBlock: 0x11, then the header's data packets joined (within REPLY_TIMEOUT)."""
        pid = mms.HEADER_PACKET_ID
        await self.ask("ReadBlock", mms.ReadBlock(play_incarnation=pid), mms.ReportReadBlock)
        deadline = time.monotonic() + REPLY_TIMEOUT
        header = bytearray()
        while True:
            event = await self.next(deadline - time.monotonic())
            if isinstance(event, mms.MmsDataPacket) and event.packet_id == pid:
                header += event.payload
                if event.header_ends:
                    return bytes(header)
            elif isinstance(event, mms.MmsCommand):
                raise PrefetchFailed(f"ReadBlock: {type(event).__name__} inside the header")

    async def play(self, packet_size: int, limit: float) -> tuple[bool, str]:
        """Read data packets until 0x1E (and the end marker): ``(ended with hr 0, detail)``."""
        deadline = time.monotonic() + limit
        while True:
            try:
                event = await self.next(deadline - time.monotonic())
            except TimeoutError:
                return False, "timed out"
            if isinstance(event, mms.MmsDataPacket):
                if event.packet_id != DATA_PACKET_ID:
                    continue
                if len(event.payload) > packet_size:
                    continue  # an end marker before 0x1E: not ours to judge, 0x1E decides
                self.packets += 1
                self.media_bytes += len(event.payload)
            elif isinstance(event, mms.ReportEndOfStream):
                if event.hr:
                    return False, f"the stream ended with {_hr(event.hr)}"
                await self._end_marker(packet_size)
                return True, "complete"
            elif isinstance(event, mms.ReportStreamChange):
                return False, "a playlist (stream change) cannot be prefetched"

    async def _end_marker(self, packet_size: int) -> None:
        """The proxy's data end marker after 0x1E (MMST), so nothing is left unread; brief."""
        deadline = time.monotonic() + END_MARKER_WAIT
        while True:
            try:
                event = await self.next(deadline - time.monotonic())
            except (TimeoutError, ConnectionError):
                return
            if isinstance(event, mms.MmsDataPacket) and len(event.payload) > packet_size:
                return


def _selection(header: asf.AsfHeader, streams: Iterable[int] | None) -> dict[int, mms.Thinning]:
    """The StreamSwitch entries: ``streams`` on and the header's others off (VLC's way), or
    every stream of the header on (ffmpeg's)."""
    every = header.stream_numbers
    keep = every if streams is None else frozenset(streams)
    if not keep:
        raise PrefetchFailed("no stream selected")
    if not keep <= every:
        raise PrefetchFailed(
            f"streams {sorted(keep - every)} are not in the clip (it has {sorted(every)})"
        )
    return {s: mms.Thinning.ALL if s in keep else mms.Thinning.OFF for s in sorted(every)}


async def prefetch_mms(
    url: str,
    host: str,
    port: int,
    *,
    streams: Iterable[int] | None = None,
    limit: float = 3600.0,
) -> PrefetchResult:
    """Play ``url`` through the proxy's MMS listener at ``host:port`` to its end.

    ``url`` (``mms://`` or ``mmst://``) names a reverse route of the proxy or an origin.
    ``streams`` (ASF stream numbers) fills one Intelligent Streaming variant; by default every
    stream of the header is selected. ``ok`` is True when the proxy ended the play with 0x1E
    (``hr`` 0) within the clip's time (twice its duration plus 30 s, at most ``limit``) and,
    for a play of every stream, after every packet of the file.
    """
    started = time.monotonic()
    try:
        parts = urlsplit(url)
        url_port = parts.port
    except ValueError as exc:
        return PrefetchResult(url, False, f"bad URL: {exc}", 0.0)
    if parts.scheme.lower() not in MMS_SCHEMES or not parts.hostname:
        return PrefetchResult(url, False, "not an MMS URL (mms://host/path)", 0.0)
    hint = parts.hostname if url_port is None else f"{parts.hostname}:{url_port}"
    if ":" in parts.hostname:
        hint = f"[{parts.hostname}]" + ("" if url_port is None else f":{url_port}")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError) as exc:
        detail = str(exc) or "no answer in time"
        return PrefetchResult(url, False, f"cannot reach the proxy: {detail}", 0.0)
    client = _MmsClient(reader, writer)

    def result(ok: bool, detail: str) -> PrefetchResult:
        return PrefetchResult(url, ok, detail, time.monotonic() - started, client.media_bytes)

    opened: mms.ReportOpenFile | None = None
    try:
        await client.ask(
            "Connect", mms.Connect(f"{SUBSCRIBER}; Host: {hint}"), mms.ReportConnectedEx
        )
        await client.ask("FunnelInfo", mms.FunnelInfo(), mms.ReportFunnelInfo)
        local = writer.get_extra_info("sockname") or ("127.0.0.1", 1037)
        funnel = mms.ConnectFunnel.for_transport(local[0], "TCP", local[1] or 1037)
        await client.ask("ConnectFunnel", funnel, mms.ReportConnectedFunnel)
        opened = await client.ask("OpenFile", mms.OpenFile(url), mms.ReportOpenFile)
        if not opened.open_file_id:
            return result(False, "OpenFile: no file id in the reply")
        if opened.is_broadcast:
            return result(False, "not an on-demand clip (a live broadcast)")
        raw = await client.read_header()
        header = asf.parse_asf_header(raw)
        if header.is_broadcast:
            return result(False, "not an on-demand clip (a live broadcast)")
        duration = max(opened.file_duration, header.duration)
        if duration <= 0:
            return result(False, "not an on-demand clip (no known end)")
        choice = _selection(header, streams)
        await client.ask("StreamSwitch", mms.StreamSwitch.select(choice), mms.ReportStreamSwitch)
        start = mms.StartPlaying(play_incarnation=DATA_PACKET_ID, open_file_id=opened.open_file_id)
        await client.ask("StartPlaying", start, mms.ReportStartedPlaying)
        whole, detail = await client.play(header.packet_size, min(limit, duration * 2 + 30))
        total = opened.file_packet_count
        if whole and streams is None and total and client.packets != total:
            whole, detail = False, f"incomplete: {client.packets} packets of {total}"
        return result(whole, detail)
    except PrefetchFailed as exc:
        return result(False, str(exc))
    except (ProtocolError, ConnectionError, OSError, TimeoutError) as exc:
        if isinstance(exc, MmsProtocolError):
            detail = f"bad MMS from the proxy: {exc}"
        else:
            detail = str(exc) or (
                "no reply in time" if isinstance(exc, TimeoutError) else repr(exc)
            )
        return result(False, detail)
    finally:
        if opened is not None and opened.open_file_id and not writer.is_closing():
            # the player leaves: the proxy closes its origin session and writes the record
            with contextlib.suppress(OSError, RuntimeError):
                client.send(mms.CloseFile(play_incarnation=1, open_file_id=opened.open_file_id))
        writer.close()
