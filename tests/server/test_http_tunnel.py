"""RTSP over HTTP tunnelling on the QuickTime port: the GET/POST pair, and what it refuses.

ffmpeg's ``-rtsp_transport http`` through the proxy is judged in
plugins/quicktime/tests/test_quicktime_peers.py (framemd5 equal to the origin's); here raw
sockets show the wire: the GET's 200, replies on the GET, and each refusal.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator

import pytest

from mediacache.server.httptunnel import TunnelBroker, parse_head
from mediacache.testing.proxy import ProxyThread

pytestmark = pytest.mark.realtime


@pytest.fixture(scope="module")
def proxy() -> Iterator[ProxyThread]:
    with ProxyThread("") as p:
        yield p


def connect(proxy: ProxyThread) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port("quicktime")), timeout=5)


def read_until(sock: socket.socket, marker: bytes, limit: float = 5.0) -> bytes:
    data = b""
    deadline = time.monotonic() + limit
    while marker not in data and time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        data += chunk
    return data


def get(proxy: ProxyThread, cookie: str) -> socket.socket:
    sock = connect(proxy)
    sock.sendall(
        f"GET /vod/x HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n"
        "Accept: application/x-rtsp-tunnelled\r\n\r\n".encode()
    )
    return sock


def post(proxy: ProxyThread, cookie: str, body: bytes = b"") -> socket.socket:
    sock = connect(proxy)
    sock.sendall(
        f"POST /vod/x HTTP/1.0\r\nx-sessioncookie: {cookie}\r\n"
        "Content-Type: application/x-rtsp-tunnelled\r\nContent-Length: 32767\r\n\r\n".encode()
        + body
    )
    return sock


OPTIONS = b"OPTIONS * RTSP/1.0\r\nCSeq: 7\r\n\r\n"


def test_requests_posted_in_base64_are_answered_on_the_get(proxy: ProxyThread) -> None:
    with get(proxy, "c1") as g:
        head = read_until(g, b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.0 200 OK") and b"application/x-rtsp-tunnelled" in head
        encoded = base64.b64encode(OPTIONS)
        with post(proxy, "c1", encoded[:5]) as p:  # split anywhere, with line breaks
            p.sendall(encoded[5:9] + b"\r\n" + encoded[9:])
            reply = read_until(g, b"\r\n\r\n")
            assert reply.startswith(b"RTSP/1.0 200 OK") and b"CSeq: 7" in reply
        # the POST may close and a new one carry the next request (Apple's scheme allows it)
        with post(proxy, "c1", base64.b64encode(OPTIONS.replace(b"7", b"8"))):
            assert b"CSeq: 8" in read_until(g, b"CSeq: 8")


def test_a_post_for_no_tunnel_is_404(proxy: ProxyThread) -> None:
    with post(proxy, "nobody", base64.b64encode(OPTIONS)) as p:
        reply = read_until(p, b"\r\n\r\n")
    assert reply.startswith(b"HTTP/1.0 404")


def test_a_second_get_for_a_cookie_in_use_is_409(proxy: ProxyThread) -> None:
    with get(proxy, "c2") as first:
        assert read_until(first, b"\r\n\r\n").startswith(b"HTTP/1.0 200")
        with get(proxy, "c2") as second:
            assert read_until(second, b"\r\n\r\n").startswith(b"HTTP/1.0 409")


def test_bytes_that_are_not_base64_close_the_post_not_the_session(proxy: ProxyThread) -> None:
    with get(proxy, "c3") as g:
        read_until(g, b"\r\n\r\n")
        with post(proxy, "c3", b"!!!! this is not base64 at all ====AAAA") as bad:
            assert read_until(bad, b"never") == b""  # closed without a word
        with post(proxy, "c3", base64.b64encode(OPTIONS)):
            assert read_until(g, b"CSeq: 7").startswith(b"RTSP/1.0 200")


def test_an_oversized_head_and_a_missing_cookie_are_refused(proxy: ProxyThread) -> None:
    with connect(proxy) as s:
        s.sendall(b"GET / HTTP/1.0\r\nx-junk: " + b"a" * 9000)
        assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.0 431")
    with connect(proxy) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_until(s, b"\r\n\r\n").startswith(b"HTTP/1.0 400")


def test_plain_rtsp_still_works_on_the_same_port(proxy: ProxyThread) -> None:
    with connect(proxy) as s:
        s.sendall(b"GET_PARAMETER * RTSP/1.0\r\nCSeq: 2\r\n\r\n" + OPTIONS)
        data = read_until(s, b"CSeq: 7")
    assert data.startswith(b"RTSP/1.0") and b"CSeq: 7" in data
    assert proxy.wait_idle(5)


def test_a_post_from_another_address_finds_no_tunnel() -> None:
    """Only the GET's own host may feed it: a cookie seen on the wire is not enough."""

    class Driver:
        done = False

        class client:
            peer = ("192.0.2.1", 40000)

    broker = TunnelBroker()
    driver = Driver()
    assert broker.register("k", driver)  # type: ignore[arg-type]
    assert broker.find("k", "192.0.2.1") is driver
    assert broker.find("k", "198.51.100.7") is None
    assert parse_head(b"GET / HTTP/1.0\r\nX-SessionCookie: k") == ("GET", {"x-sessioncookie": "k"})
    assert parse_head(b"OPTIONS * RTSP/1.0") is None
