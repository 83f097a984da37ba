"""RTSP over HTTP tunnelling (Apple's QuickTime scheme), on the format's own listening port.

A player that cannot take UDP or raw RTSP/TCP (a firewall that passes only HTTP) opens two
HTTP connections that share an ``x-sessioncookie``:

* ``GET`` (``Accept: application/x-rtsp-tunnelled``): the server answers ``200 OK`` and from
  then on writes every RTSP reply and every interleaved data frame on it, unencoded, until it
  closes. This connection *is* the session's client connection: the layer sees nothing new.
* ``POST`` (``Content-Type: application/x-rtsp-tunnelled``): the client's RTSP requests,
  base64-encoded, for as long as it likes (ffmpeg keeps one POST open; the scheme allows a new
  POST per request). The proxy decodes them and delivers them to the GET connection's session
  as if they had come on it.

So tunnelling is a transport, in the core: the sans-I/O RTSP layer is unchanged. Every
connection is sniffed on its first bytes; anything that is not ``GET``/``POST`` is plain RTSP.
A POST must come from the same address as its GET (otherwise anyone who saw a cookie could
inject requests into another player's session); an unknown cookie, a second GET with a cookie in
use, an HTTP head over 8 kB or bytes that are not base64 get an HTTP error or a close, and the
player's session is never touched. (Real players' own "HTTP cloaking" is a different scheme and
is not served.)
"""

from __future__ import annotations

import binascii
import re
from typing import Any

from loguru import logger

from mediacache.sansio.events import DataReceived
from mediacache.server.session import ClientProtocol, SessionDriver

MAX_HEAD = 8192
TUNNEL_TYPE = "application/x-rtsp-tunnelled"
_B64_JUNK = re.compile(rb"[^A-Za-z0-9+/=]")
_GET_OK = (
    "HTTP/1.0 200 OK\r\n"
    "Server: mediacache\r\n"
    "Connection: close\r\n"
    "Cache-Control: no-store\r\n"
    "Pragma: no-cache\r\n"
    f"Content-Type: {TUNNEL_TYPE}\r\n"
    "\r\n"
).encode()


def _http_error(status: int, reason: str) -> bytes:
    return (
        f"HTTP/1.0 {status} {reason}\r\nServer: mediacache\r\nConnection: close\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()


class TunnelBroker:
    """The GET connections waiting for (or fed by) their POST, by cookie, per listener."""

    def __init__(self) -> None:
        self.gets: dict[str, SessionDriver] = {}

    def register(self, cookie: str, driver: SessionDriver) -> bool:
        if cookie in self.gets and not self.gets[cookie].done:
            return False
        self.gets[cookie] = driver
        return True

    def find(self, cookie: str, peer_host: str) -> SessionDriver | None:
        driver = self.gets.get(cookie)
        if driver is None or driver.done:
            self.gets.pop(cookie, None)
            return None
        if driver.client.peer[0] != peer_host:
            return None
        return driver

    def forget(self, driver: SessionDriver) -> None:
        for cookie in [c for c, d in self.gets.items() if d is driver]:
            del self.gets[cookie]


def parse_head(head: bytes) -> tuple[str, dict[str, str]] | None:
    """(method, lower-cased headers) of an HTTP request head; None if it is not one."""
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover - latin-1 decodes every byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return None
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return parts[0], headers


class TunnellingClientProtocol(ClientProtocol):
    """A client connection of an RTSP format: plain RTSP, or one half of an HTTP tunnel."""

    def __init__(self, make_driver: Any, broker: TunnelBroker) -> None:
        super().__init__(make_driver)
        self.broker = broker
        self.mode = "sniff"  # sniff | rtsp | get | post | closed
        self.head = bytearray()
        self.target: SessionDriver | None = None
        self.pending = bytearray()  # base64 not yet decoded (a partial quantum)

    def data_received(self, data: bytes) -> None:
        mode = self.mode
        if mode == "rtsp":
            self.driver.feed(DataReceived(self.conn, data))
        elif mode == "post":
            self._post_data(data)
        elif mode == "sniff":
            self._sniff(data)
        # "get": a GET connection has nothing more to say; "closed": ignore

    def _sniff(self, data: bytes) -> None:
        self.head += data
        start = bytes(self.head[:5])
        if not (b"GET ".startswith(start[:4]) or b"POST ".startswith(start)):
            self.mode = "rtsp"
            self.driver.feed(DataReceived(self.conn, bytes(self.head)))
            self.head.clear()
            return
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > MAX_HEAD:
                self._refuse(431, "Request Header Fields Too Large", "HTTP head over 8 kB")
            return
        parsed = parse_head(bytes(self.head[:end]))
        body = bytes(self.head[end + 4 :])
        self.head.clear()
        if parsed is None:
            self._refuse(400, "Bad Request", "not an HTTP request")
            return
        method, headers = parsed
        cookie = headers.get("x-sessioncookie", "")
        if not cookie or len(cookie) > 256:
            self._refuse(400, "Bad Request", "an HTTP request without x-sessioncookie")
            return
        if method == "GET":
            self._start_get(cookie)
        elif method == "POST":
            self._start_post(cookie, body)
        else:
            self._refuse(405, "Method Not Allowed", f"HTTP {method}")

    def _start_get(self, cookie: str) -> None:
        if not self.broker.register(cookie, self.driver):
            self._refuse(409, "Conflict", "a second GET for a tunnel cookie in use")
            return
        self.mode = "get"
        self.transport.write(_GET_OK)
        driver, broker = self.driver, self.broker
        on_done = driver.on_done

        def done(d: SessionDriver) -> None:
            broker.forget(d)
            if on_done is not None:
                on_done(d)

        driver.on_done = done
        logger.debug("{}: RTSP-over-HTTP tunnel opened (GET)", self.conn)

    def _start_post(self, cookie: str, body: bytes) -> None:
        target = self.broker.find(cookie, self.conn.peer[0])
        if target is None:
            self._refuse(404, "Not Found", "a POST for no open tunnel")
            return
        self.driver.retire()  # this connection only carries requests into the GET's session
        self.mode = "post"
        self.target = target
        if body:
            self._post_data(body)

    def _post_data(self, data: bytes) -> None:
        target = self.target
        if target is None or target.done:
            self._close()
            return
        self.pending += _B64_JUNK.sub(b"", data)  # line breaks some clients insert
        usable = len(self.pending) // 4 * 4
        if not usable:
            return
        chunk = bytes(self.pending[:usable])
        del self.pending[:usable]
        try:
            decoded = binascii.a2b_base64(chunk, strict_mode=True)
        except binascii.Error as exc:
            logger.info("{}: tunnel POST is not base64 ({}): closed", self.conn, exc)
            self._close()
            return
        if decoded:
            target.feed(DataReceived(target.client, decoded))

    def _refuse(self, status: int, reason: str, why: str) -> None:
        logger.info("{}: HTTP {} ({})", self.conn, status, why)
        self.driver.retire()
        self.transport.write(_http_error(status, reason))
        self._close()

    def _close(self) -> None:
        self.mode = "closed"
        self.transport.close()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.mode in ("post", "closed"):
            return  # the tunnel's session lives on its GET connection
        super().connection_lost(exc)
