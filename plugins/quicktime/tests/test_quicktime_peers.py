"""QuickTime through the proxy, judged by real peers: GStreamer as origin, ffmpeg as player.

"Works" means the packets ffmpeg receives through the proxy (``-f framemd5``: stream, size,
hash) equal those it receives from the origin directly.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from stevedore import ExtensionManager
from stevedore.extension import Extension

from mediacache.plugins import load_plugins
from mediacache.rtp import rtcp_has_bye
from mediacache.rtsp.headers import parse_transports
from mediacache.testing.judge import same_packets
from mediacache.testing.peers import (
    ByteCountingRelay,
    GstRtspOrigin,
    ffmpeg_framemd5,
    free_port_pair,
    make_clip,
    missing_peers,
)
from mediacache.testing.proxy import ProxyThread, open_fds
from mediacache.testing.rtspclient import MiniRtspClient, rtp_payloads

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(
        bool(missing_peers("ffmpeg", "gstreamer")), reason="needs ffmpeg and GStreamer RTSP"
    ),
]


@pytest.fixture(scope="module")
def origin() -> Iterator[GstRtspOrigin]:
    clip = make_clip(seconds=4, kind="h264_aac")
    with GstRtspOrigin(vod={"clip.mp4": clip}, live=()) as o:
        yield o


@pytest.fixture(scope="module")
def direct(origin: GstRtspOrigin) -> list:  # type: ignore[type-arg]
    return ffmpeg_framemd5(origin.url("/vod/clip.mp4"), transport="tcp", timeout=40)


def route_config(origin: GstRtspOrigin, extra: str = "") -> str:
    return (
        "[[routes]]\nformat = 'quicktime'\nprefix = '/vod/'\n"
        f"origin = 'rtsp://127.0.0.1:{origin.port}/vod/'\n" + extra
    )


@pytest.fixture(scope="module")
def proxy(origin: GstRtspOrigin) -> Iterator[ProxyThread]:
    """Pass-through only: the cache has tests of its own (test_quicktime_cache.py)."""
    with ProxyThread(route_config(origin, "[cache]\nenabled = false\n")) as p:
        yield p


def proxied(proxy: ProxyThread, path: str = "/vod/clip.mp4") -> str:
    return f"rtsp://127.0.0.1:{proxy.port('quicktime')}{path}"


@pytest.mark.parametrize("transport", ["udp", "tcp", "http"])
def test_ffmpeg_through_the_proxy_gets_the_origins_packets(
    proxy: ProxyThread,
    direct: list,
    transport: str,  # type: ignore[type-arg]
) -> None:
    assert len(direct) > 100 and {p[0] for p in direct} == {0, 1}
    through = ffmpeg_framemd5(proxied(proxy), transport=transport, timeout=40)  # type: ignore[arg-type]
    assert same_packets(through, direct)


def test_a_second_port_for_firewalled_players(origin: GstRtspOrigin, direct: list) -> None:  # type: ignore[type-arg]
    """``also_listen`` (the guide's "HTTP tunnelling on port 80/any port"): the same routes on
    another port, for RTSP-over-HTTP tunnels and plain RTSP alike."""
    from mediacache.testing.peers import free_port

    extra = free_port()
    config = route_config(origin, f"[formats.quicktime]\nalso_listen = ['127.0.0.1:{extra}']\n")
    with ProxyThread(config + "[cache]\nenabled = false\n") as p:
        url = f"rtsp://127.0.0.1:{extra}/vod/clip.mp4"
        assert same_packets(ffmpeg_framemd5(url, transport="http", timeout=40), direct)
        assert same_packets(ffmpeg_framemd5(url, transport="tcp", timeout=40), direct)
        assert [r.status for r in p.wait_records(2)] == [200, 200]


def test_access_log_record_per_session(proxy: ProxyThread, direct: list) -> None:  # type: ignore[type-arg]
    before = len(proxy.records())
    ffmpeg_framemd5(proxied(proxy), transport="udp", timeout=40)
    records = proxy.wait_records(before + 1)
    rec = records[before]
    assert rec.format == "quicktime" and rec.result == "PASS" and rec.status == 200
    assert rec.transport == "udp" and rec.url == proxied(proxy)
    assert rec.bytes_to_client > 50_000 and rec.origin_bytes >= rec.bytes_to_client
    assert rec.end - rec.start > 3  # the clip plays in real time


def test_forward_mode_with_an_absolute_url(proxy: ProxyThread, origin: GstRtspOrigin) -> None:
    """The client names the origin in the Request-URI; the proxy fetches from it."""
    url = origin.url("/vod/clip.mp4")
    with MiniRtspClient("127.0.0.1", origin.port) as c:
        direct_frames = c.play_all_tcp(url)
    with MiniRtspClient("127.0.0.1", proxy.port("quicktime")) as c:
        frames = c.play_all_tcp(url)
    for channel in (0, 2):
        want = rtp_payloads(direct_frames, channel)
        assert len(want) > 20
        assert rtp_payloads(frames, channel) == want


def test_twenty_concurrent_ffmpeg_clients(proxy: ProxyThread, direct: list) -> None:  # type: ignore[type-arg]
    transports = ["udp", "tcp"] * 10
    with ThreadPoolExecutor(20) as pool:
        results = list(
            pool.map(lambda t: ffmpeg_framemd5(proxied(proxy), transport=t, timeout=60), transports)
        )
    assert all(same_packets(r, direct) for r in results)
    assert proxy.wait_idle(10)


def test_origin_errors_pass_unchanged(proxy: ProxyThread) -> None:
    with MiniRtspClient("127.0.0.1", proxy.port("quicktime")) as c:
        r = c.request("DESCRIBE", proxied(proxy, "/vod/nope.mp4"))
    assert r.status == 404


def test_unreachable_origin_is_502(origin: GstRtspOrigin) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    config = f"[[routes]]\nformat='quicktime'\nprefix='/x/'\norigin='rtsp://127.0.0.1:{dead}/'\n"
    with ProxyThread(config) as p, MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
        r = c.request("DESCRIBE", f"rtsp://127.0.0.1:{p.port('quicktime')}/x/a")
        assert r.status == 502
        assert "unreachable" in (r.headers.get("X-Mediacache-Error") or "")


def test_access_control_refuses_other_networks(origin: GstRtspOrigin) -> None:
    config = route_config(origin, "[access]\nallow = ['10.0.0.0/8']\n")
    seen = origin.connections_total
    with ProxyThread(config) as p, MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
        r = c.request("DESCRIBE", proxied(p))
        assert r.status == 403
        rec = p.wait_records(1)[0]
        assert rec.result == "DENIED" and rec.status == 403
    assert origin.connections_total == seen  # refused before any origin connection


def test_udp_client_sockets_get_rtp_and_rtcp_and_their_receiver_reports_count(
    origin: GstRtspOrigin,
) -> None:
    """A UDP client on real sockets: RTP on its even port from the even server port the proxy
    advertised, RTCP sender reports on its odd port from the odd one. Its receiver reports,
    sent to the advertised odd port, are its only sign of life while it plays; they keep it
    past ``session_timeout`` (1.5 s, the clip lasts 4) and each reaches the origin on its
    RTCP channel, counted byte for byte by a relay in front of the origin."""
    rtp_port, rtcp_port = free_port_pair()
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp_sock,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtcp_sock,
        ByteCountingRelay(origin.port) as relay,
    ):
        rtp_sock.bind(("127.0.0.1", rtp_port))
        rtcp_sock.bind(("127.0.0.1", rtcp_port))
        config = (
            "[[routes]]\nformat = 'quicktime'\nprefix = '/vod/'\n"
            f"origin = '{relay.url('/vod/')}'\n"
            "[formats.quicktime]\nsession_timeout = 1.5\n[cache]\nenabled = false\n"
        )
        with ProxyThread(config) as p, MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
            url = proxied(p)
            assert c.request("DESCRIBE", url).status == 200
            r = c.request(
                "SETUP",
                f"{url}/stream=0",
                [("Transport", f"RTP/AVP;unicast;client_port={rtp_port}-{rtcp_port}")],
            )
            assert r.status == 200
            (spec,) = parse_transports(r.headers.get("Transport") or "")
            assert spec.client_port == (rtp_port, rtcp_port)
            assert spec.server_port in p.udp_ports("quicktime")
            server_rtp, server_rtcp = spec.server_port  # type: ignore[misc]
            assert server_rtp % 2 == 0 and server_rtcp == server_rtp + 1
            assert c.request("PLAY", url, [("Range", "npt=0-")]).status == 200
            played_at, up_before = time.monotonic(), relay.bytes_up

            report = bytes([0x80, 201, 0, 1]) + (0x5EED).to_bytes(4, "big")  # RR, no blocks
            rtp: list[tuple[tuple[str, int], bytes]] = []
            rtcp: list[tuple[tuple[str, int], bytes]] = []
            reports_sent, next_report = 0, 0.0
            with selectors.DefaultSelector() as sel:
                sel.register(rtp_sock, selectors.EVENT_READ, rtp)
                sel.register(rtcp_sock, selectors.EVENT_READ, rtcp)
                deadline = played_at + 12
                while time.monotonic() < deadline and not any(rtcp_has_bye(d) for _, d in rtcp):
                    if time.monotonic() >= next_report:
                        rtcp_sock.sendto(report, ("127.0.0.1", server_rtcp))
                        reports_sent += 1
                        next_report = time.monotonic() + 0.3
                    for key, _ in sel.select(0.1):
                        data, addr = key.fileobj.recvfrom(65536)  # type: ignore[union-attr]
                        key.data.append((addr[:2], data))
            ended_at = time.monotonic()
            assert any(rtcp_has_bye(d) for _, d in rtcp), "the clip did not play to its end"
            assert ended_at - played_at > 3  # twice the session timeout, on reports alone

            assert len(rtp) > 50
            assert {addr for addr, _ in rtp} == {("127.0.0.1", server_rtp)}
            assert all(d[0] >> 6 == 2 and d[1] & 0x7F == 96 for _, d in rtp)  # RTP, H.264
            assert {addr for addr, _ in rtcp} == {("127.0.0.1", server_rtcp)}
            assert any(d[1] == 200 for _, d in rtcp)  # sender reports

            frame = 4 + len(report)  # each report, interleaved on the origin connection
            assert relay_settles(relay, up_before + reports_sent * frame)
            assert c.request("TEARDOWN", url).status == 200
        (record,) = p.wait_records(1)
    assert record.reason == "teardown" and record.transport == "udp" and record.status == 200


def relay_settles(relay: ByteCountingRelay, want: int, timeout: float = 5) -> bool:
    """Has the relay carried exactly ``want`` bytes toward the origin (within ``timeout``)?"""
    deadline = time.monotonic() + timeout
    while relay.bytes_up < want and time.monotonic() < deadline:
        time.sleep(0.05)
    return relay.bytes_up == want


# -- hostile input ------------------------------------------------------------------------


def _recv_all(sock: socket.socket, limit: float = 5.0) -> bytes:
    sock.settimeout(limit)
    chunks = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"RTSP/1.0 ") else 0


def test_hostile_input_gets_errors_and_leaks_nothing(origin: GstRtspOrigin) -> None:
    config = route_config(origin, "[formats.quicktime]\nsession_timeout = 2\n")
    with ProxyThread(config) as p:
        port = p.port("quicktime")
        url = proxied(p)
        # warm up once so lazily created loop resources exist before we count
        with MiniRtspClient("127.0.0.1", port) as c:
            assert c.request("OPTIONS", "*").status == 200
        assert p.wait_idle(5)
        fds, tasks = open_fds(), p.task_count()
        origin_sessions = origin.active_sessions()

        def raw(data: bytes, *, shut: bool = True) -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                try:
                    s.sendall(data)
                    if shut:
                        s.shutdown(socket.SHUT_WR)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return _recv_all(s)

        def closed_by_proxy(data: bytes) -> bytes:
            """The reply to ``data``, sent without a FIN of ours: the proxy must answer and
            close on its own, long before the 10 s receive limit and the 2 s idle timeout."""
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                t0 = time.monotonic()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    s.sendall(data)
                reply = _recv_all(s, 10)
                assert time.monotonic() - t0 < 1.5, "the proxy did not close the connection"
                return reply

        rng = random.Random(7)
        garbage = bytes(rng.getrandbits(8) for _ in range(4096))
        assert _status(closed_by_proxy(garbage)) in (400, 505)
        assert _status(raw(garbage)) in (0, 400, 505)
        assert _status(raw(b"DESCRIBE " + b"a" * 1_000_000 + b" RTSP/1.0\r\n")) == 414
        big_header = b"DESCRIBE %s RTSP/1.0\r\nCSeq: 1\r\nX-Big: " % url.encode()
        big_header += b"a" * 1_000_000 + b"\r\n\r\n"
        assert _status(closed_by_proxy(big_header)) == 400  # a header line over max_line
        many = b"DESCRIBE %s RTSP/1.0\r\nCSeq: 1\r\n" % url.encode()
        many += b"".join(b"X-H%d: v\r\n" % i for i in range(10_000)) + b"\r\n"
        assert _status(raw(many)) == 400
        assert _status(raw(b"DESCRIBE %s RTSP/1.0\r\n\r\n" % url.encode(), shut=False)) == 400
        setup = b"SETUP %s/stream=0 RTSP/1.0\r\nCSeq: 1\r\nSession: bogus\r\n" % url.encode()
        setup += b"Transport: RTP/AVP;unicast;client_port=5000-5001\r\n\r\n"
        assert _status(raw(setup, shut=False)) == 454
        play = b"PLAY %s RTSP/1.0\r\nCSeq: 1\r\n\r\n" % url.encode()
        assert _status(raw(play, shut=False)) == 455

        # a client that vanishes mid-PLAY
        c = MiniRtspClient("127.0.0.1", port)
        c.request("DESCRIBE", url)
        c.request(
            "SETUP", url + "/stream=0", [("Transport", "RTP/AVP/TCP;unicast;interleaved=0-1")]
        )
        assert c.request("PLAY", url).status == 200
        c.read_frames(0.5, until_bye=False)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        c.close()  # RST, no TEARDOWN

        # a client that connects and says nothing is closed after session_timeout
        with socket.create_connection(("127.0.0.1", port), timeout=5) as idle:
            t0 = time.monotonic()
            assert _recv_all(idle, 6) == b""
            assert time.monotonic() - t0 < 5

        # still serving others
        with MiniRtspClient("127.0.0.1", port) as c2:
            assert c2.request("DESCRIBE", url).status == 200
        assert p.wait_idle(10)
        assert origin.wait_for(lambda: origin.active_sessions() <= origin_sessions, 10)
        time.sleep(0.3)
        assert p.task_count() <= tasks
        assert open_fds() <= fds
        assert p.watcher_count() == 0


def test_a_broken_plugin_is_reported_and_quicktime_still_works(origin: GstRtspOrigin) -> None:
    import mediacache_quicktime.plugin as qt

    class Broken:
        from mediacache.hookspecs import hookimpl

        @hookimpl
        def mediacache_register_formats(self, registry: object) -> None:
            raise RuntimeError("deliberately broken")

    exts = [
        Extension("broken", None, Broken(), None),  # type: ignore[arg-type]
        Extension("quicktime", None, qt.PLUGIN, None),  # type: ignore[arg-type]
    ]
    host = load_plugins(ExtensionManager.make_test_instance(exts))
    assert [f.name for f in host.failures] == ["broken"]
    assert "deliberately broken" in host.failures[0].error
    with (
        ProxyThread(route_config(origin), host=host) as p,
        MiniRtspClient("127.0.0.1", p.port("quicktime")) as c,
    ):
        assert c.request("DESCRIBE", proxied(p)).status == 200


def test_keepalives_follow_the_origin_session_timeout() -> None:
    """The origin times sessions out after 2 s; a client paused for 5 s (and silent, since it
    was told our timeout of 60 s) still resumes, because the proxy keeps the origin alive."""
    clip = make_clip(seconds=4, kind="h264_aac")
    with (
        GstRtspOrigin(vod={"clip.mp4": clip}, live=(), session_timeout=2) as o,
        ProxyThread(route_config(o)) as p,
        MiniRtspClient("127.0.0.1", p.port("quicktime")) as c,
    ):
        url = proxied(p)
        assert c.request("DESCRIBE", url).status == 200
        for i in range(2):
            transport = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"
            assert c.request("SETUP", f"{url}/stream={i}", [("Transport", transport)]).status == 200
        assert c.request("PLAY", url).status == 200
        c.read_frames(0.5, until_bye=False)
        assert c.request("PAUSE", url).status == 200
        time.sleep(5)
        assert c.request("PLAY", url).status == 200
        before = len(c.frames)
        c.read_frames(1.5, until_bye=False)
        assert len(c.frames) > before + 10
        keepalives = [m for m, _ in o.requests() if m in ("GET_PARAMETER", "OPTIONS")]
        assert len(keepalives) >= 2


def test_ipv6_clients(origin: GstRtspOrigin, direct: list) -> None:  # type: ignore[type-arg]
    """Listening on [::1]: ffmpeg over TCP and UDP (the shared UDP sockets are IPv6 too)."""
    with ProxyThread(route_config(origin), listen_host="::1") as p:
        url = f"rtsp://[::1]:{p.port('quicktime')}/vod/clip.mp4"
        for transport in ("tcp", "udp"):
            assert same_packets(ffmpeg_framemd5(url, transport=transport, timeout=40), direct)
        assert [r.client.startswith("::1") for r in p.wait_records(2)] == [True, True]
