"""Prefetch: fill the cache without a viewer, through exactly the path a viewer's miss takes.

The prefetcher is an RTSP client of the proxy itself: it connects to the format's own
listener on loopback, asks for the URL (a reverse-route URL or an absolute origin URL), sets up
every track interleaved, plays the clip to its end and discards the media. The proxy sees a
client like any other, so the fill, the validators and the access-log record (with the
user agent ``mediacache-prefetch``) are those of an ordinary miss.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from mediacache.errors import ProtocolError
from mediacache.rtp import rtcp_has_bye
from mediacache.rtsp.message import (
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    build_request,
)
from mediacache.rtsp.sdp import parse_sdp
from mediacache.rtsp.url import resolve_url

USER_AGENT = "mediacache-prefetch"


@dataclass
class PrefetchResult:
    url: str
    ok: bool
    detail: str
    seconds: float
    media_bytes: int = 0


class PrefetchClient:
    """A minimal RTSP client of the proxy's own listener (a format's prefetch may subclass it
    to read its own data frames, as Real's does)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.rtsp = RtspReader(max_body=4 * 1024 * 1024)
        self.cseq = 0
        self.session: str | None = None
        self.media_bytes = 0
        self.byes: set[int] = set()

    async def request(self, method: str, url: str, *headers: tuple[str, str]) -> Response:
        self.cseq += 1
        pairs = [("CSeq", str(self.cseq)), ("User-Agent", USER_AGENT), *headers]
        if self.session:
            pairs.append(("Session", self.session))
        self.writer.write(build_request(Request(method, url, Headers(pairs))))
        while True:
            event = await self._next()
            if isinstance(event, Response):
                if event.status < 300 and "Session" in event.headers:
                    self.session = (event.headers.get("Session") or "").split(";")[0]
                return event

    async def _next(self) -> object:
        while True:
            event = self.rtsp.next_event()
            if isinstance(event, InterleavedFrame):
                self._frame(event)
                continue
            if event is not None:
                return event
            data = await self.reader.read(65536)
            if not data:
                raise ConnectionError("the proxy closed the connection")
            self.rtsp.receive_data(data)

    def _frame(self, frame: InterleavedFrame) -> None:
        self.media_bytes += len(frame.payload)
        if frame.channel % 2 and rtcp_has_bye(frame.payload):
            self.byes.add(frame.channel)

    async def drain_until_bye(self, channels: int, limit: float) -> bool:
        deadline = time.monotonic() + limit
        while len(self.byes) < channels:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                data = await asyncio.wait_for(self.reader.read(65536), left)
            except TimeoutError:
                return False
            if not data:
                raise ConnectionError("the proxy closed the connection")
            self.rtsp.receive_data(data)
            while (event := self.rtsp.next_event()) is not None:
                if isinstance(event, InterleavedFrame):
                    self._frame(event)
        return True


async def prefetch_rtsp(url: str, host: str, port: int, *, limit: float = 3600.0) -> PrefetchResult:
    """Play ``url`` through the proxy at ``host:port`` to the end; True when it ended whole."""
    started = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (OSError, TimeoutError) as exc:
        return PrefetchResult(url, False, f"cannot reach the proxy: {exc}", 0.0)
    client = PrefetchClient(reader, writer)
    try:
        resp = await client.request("DESCRIBE", url, ("Accept", "application/sdp"))
        if resp.status != 200:
            return prefetch_result(
                url, False, f"DESCRIBE: {resp.status} {resp.reason}", started, client
            )
        base = resp.headers.get("Content-Base") or url
        sdp = parse_sdp(resp.body)
        duration = sdp.range.end if sdp.range is not None and sdp.range.end else None
        if duration is None:
            return prefetch_result(
                url, False, "not an on-demand clip (no known end)", started, client
            )
        for i, media in enumerate(sdp.media):
            control = resolve_url(base, media.control or "")
            transport = ("Transport", f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}")
            r = await client.request("SETUP", control, transport)
            if r.status != 200:
                return prefetch_result(url, False, f"SETUP: {r.status} {r.reason}", started, client)
        r = await client.request("PLAY", base, ("Range", "npt=0-"))
        if r.status != 200:
            return prefetch_result(url, False, f"PLAY: {r.status} {r.reason}", started, client)
        whole = await client.drain_until_bye(len(sdp.media), min(limit, duration * 2 + 30))
        await client.request("TEARDOWN", base)
        return prefetch_result(url, whole, "complete" if whole else "timed out", started, client)
    except (ProtocolError, ConnectionError, OSError, TimeoutError) as exc:
        return prefetch_result(url, False, str(exc), started, client)
    finally:
        writer.close()


def prefetch_result(
    url: str, ok: bool, detail: str, started: float, client: PrefetchClient
) -> PrefetchResult:
    """The outcome of a prefetch that started at ``started`` (monotonic)."""
    return PrefetchResult(url, ok, detail, time.monotonic() - started, client.media_bytes)
