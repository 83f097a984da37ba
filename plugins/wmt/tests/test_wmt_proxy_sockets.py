"""Hostile and broken players against the running proxy: each is closed, the others play on.

Real sockets, the reference origin behind the proxy. A broken session must leave nothing in the
cache and no session at the origin.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from wmt_origin_env import have
from wmt_proxy_env import (
    BAD_INPUTS,
    cached_keys,
    expected,
    fills,
    in_threads,
    origin_thread,
    play_clip,
    player,
    routed,
)

from mediacache.testing.origin import OriginThread
from mediacache.testing.proxy import ProxyThread
from mediacache_wmt.wire import mms

pytestmark = [
    pytest.mark.realtime,
    pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg to make the clips"),
]


@pytest.fixture
def origin() -> Iterator[OriginThread]:
    with origin_thread() as o:
        yield o
        assert o.wait_idle(), "an origin session outlived its proxy session"


def closed_by_peer(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    """What the proxy sent before closing ``sock`` (None: still open after ``timeout``)."""
    got = b""
    deadline = time.monotonic() + timeout
    sock.settimeout(0.2)
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            return got
        if not data:
            return got
        got += data
    return None


def test_bad_players_are_closed_while_another_plays(origin) -> None:
    with ProxyThread(routed(origin.port)) as p:

        def good() -> list[bytes]:
            return [x.payload for x in play_clip(p, "clip.wmv")[1].packets]

        def bad() -> dict[str, bytes | None]:
            seen = {}
            for name, data in BAD_INPUTS.items():
                with socket.create_connection(("127.0.0.1", p.port("wmt"))) as s:
                    s.sendall(data)
                    if name == "short length" or name == "a broken body":
                        s.shutdown(socket.SHUT_WR)  # a truncated command, then the end
                    seen[name] = closed_by_peer(s)
            return seen

        packets, seen = in_threads(good, bad)
        assert packets == expected("clip.wmv")
        assert all(v is not None for v in seen.values()), seen  # every one closed
        assert len(p.wait_records(1 + len(BAD_INPUTS))) == 1 + len(BAD_INPUTS)
        assert [r.result for r in p.records() if r.status == 200] == ["MISS"]
        assert p.wait_idle()


def test_out_of_order_gets_an_mms_error_over_the_socket(origin) -> None:
    with ProxyThread(routed(origin.port)) as p, player(p) as c:
        c.send(mms.StartPlaying())
        reply = c.command()
        assert isinstance(reply, mms.ReportStartedPlaying) and reply.hr == mms.HResult.UNEXPECTED
        assert c.closed()
        assert p.wait_records(1)[0].status == 400


def test_garbage_during_a_miss_leaves_nothing_cached(origin) -> None:
    with ProxyThread(routed(origin.port)) as p:
        with player(p) as c:
            c.handshake("w/clip.wmv")
            c.read_header()
            c.start()
            c.collect(5, seconds=1.0)
            c.send_raw(b"\xde\xad\xbe\xef" * 16)
            assert c.closed()
        assert p.wait_idle()
        assert cached_keys(p) == [] and fills(p) == 0
        [record] = p.wait_records(1)
        assert (record.result, record.status) == ("MISS", 400)
        _, got = play_clip(p, "clip.wmv")  # the proxy still serves, and this one is cached
        assert [x.payload for x in got.packets] == expected("clip.wmv")
        assert len(cached_keys(p)) == 1
