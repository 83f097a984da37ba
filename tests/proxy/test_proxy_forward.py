"""Playbooks for what the RTSP proxy layer does to one session's requests and URLs.

Forward mode (the client names the origin in an absolute URL) and reverse mode (a route maps a
prefix of ours to an origin); which of the two a URL asks for; origin errors passed on as
they came. Same harness and helpers as test_proxy_layer.py.
"""

from __future__ import annotations

import pytest
from test_proxy_layer import ORIGIN_SDP, connect, make, parse_one, parse_request, req, resp

from mediacache.config import Route
from mediacache.rtsp.proxy import VIA, RtspProxyLayer
from mediacache.sansio.commands import CloseConnection, EmitRecord, Log
from mediacache.sansio.connection import Connection
from mediacache.testing.playbook import Playbook
from mediacache_quicktime.plugin import QuickTimeConfig

URL = "rtsp://192.0.2.7:8554/movies/a.mov"
ORIGIN_SESSION = "0rigin5ess"


def _records(pb: Playbook) -> list[EmitRecord]:
    return [c for _, cmds in pb.history for c in cmds if isinstance(c, EmitRecord)]


def _playing_forward_session(pb: Playbook) -> tuple[Connection, str]:
    """DESCRIBE, SETUP and PLAY in forward mode; returns (origin connection, our session id).
    The client's CSeqs start at 10, so they cannot be mistaken for ours (1, 2, 3)."""
    origin, sent = connect(pb, req("DESCRIBE", URL, 10, "Accept: application/sdp"))
    assert origin.peer == ("192.0.2.7", 8554)
    assert parse_request(sent).cseq == 1
    pb.origin_sends(origin, resp(200, 1, f"Content-Base: {URL}/", body=ORIGIN_SDP))
    out = pb.client_sends(
        req("SETUP", f"{URL}/stream=0", 11, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1")
    )
    setup = parse_request(pb.sent_to(origin, out)[0])
    assert setup.cseq == 2 and setup.uri == f"{URL}/stream=0"
    out = pb.origin_sends(
        origin,
        resp(
            200,
            2,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
            f"Session: {ORIGIN_SESSION};timeout=60",
            "Public: OPTIONS, DESCRIBE, SETUP, PLAY, PAUSE, TEARDOWN, GET_PARAMETER",
        ),
    )
    r = parse_one(pb.sent_to_client(out)[0])
    sid = (r.headers.get("Session") or "").split(";")[0]
    assert r.cseq == 11 and sid and sid != ORIGIN_SESSION
    out = pb.client_sends(req("PLAY", URL, 12, f"Session: {sid}", "Range: npt=0-"))
    play = parse_request(pb.sent_to(origin, out)[0])
    assert play.cseq == 3 and play.headers.get("Session") == ORIGIN_SESSION
    out = pb.origin_sends(origin, resp(200, 3, f"Session: {ORIGIN_SESSION}", "Range: npt=0-4"))
    assert parse_one(pb.sent_to_client(out)[0]).cseq == 12
    return origin, sid


# -- forward mode -------------------------------------------------------------------------


def test_forward_mode_carries_every_method_of_a_session() -> None:
    """After DESCRIBE/SETUP/PLAY the client's OPTIONS, GET_PARAMETER, SET_PARAMETER, PAUSE
    and TEARDOWN each reach the origin with the origin's session, a Via and our CSeq (after a
    keep-alive of our own in between), and each reply carries the client's CSeq and our
    session id."""
    pb = make()
    origin, sid = _playing_forward_session(pb)

    # a keep-alive of our own takes CSeq 4: the client's requests must not reuse it
    pb.clock.now += 30
    out = pb.timer("origin-keepalive")
    keepalive = parse_request(pb.sent_to(origin, out)[0])
    assert keepalive.cseq == 4 and keepalive.headers.get("Session") == ORIGIN_SESSION
    assert pb.sent_to_client(pb.origin_sends(origin, resp(200, 4))) == []  # not relayed

    params = ("Content-Type: text/parameters",)
    steps: list[tuple[str, tuple[str, ...], bytes, bytes]] = [
        ("OPTIONS", (), b"", b""),
        ("GET_PARAMETER", params, b"position\r\n", b"position: 1.5\r\n"),
        ("SET_PARAMETER", params, b"volume: 50\r\n", b""),
        ("PAUSE", (), b"", b""),
        ("TEARDOWN", (), b"", b""),
    ]
    for n, (method, headers, body, answer) in enumerate(steps):
        client_cseq, our_cseq = 20 + n, 5 + n
        out = pb.client_sends(req(method, URL, client_cseq, f"Session: {sid}", *headers, body=body))
        (sent,) = pb.sent_to(origin, out)
        fwd = parse_request(sent)
        assert (fwd.method, fwd.uri, fwd.cseq) == (method, URL, our_cseq)
        assert fwd.headers.get("Session") == ORIGIN_SESSION
        assert fwd.headers.get("Via") == VIA
        assert fwd.body == body
        if body:
            assert fwd.headers.get("Content-Type") == "text/parameters"
        out = pb.origin_sends(
            origin, resp(200, our_cseq, f"Session: {ORIGIN_SESSION};timeout=60", body=answer)
        )
        (back,) = pb.sent_to_client(out)
        r = parse_one(back)
        assert (r.status, r.cseq) == (200, client_cseq), method
        assert (r.headers.get("Session") or "").split(";")[0] == sid, method
        assert r.body == answer

    (record,) = _records(pb)  # TEARDOWN ended the session: one record, now
    assert record.record.reason == "teardown" and record.record.session == sid
    assert record.record.url == URL
    # TEARDOWN leaves the connection usable for a new session (RFC 2326); when the client
    # goes, the origin connection goes too, and no second record is written
    out = pb.closed(pb.client)
    assert CloseConnection(origin) in out
    assert not [m for m in pb.sent_to(origin, out) if parse_request(m).method == "TEARDOWN"]
    assert len(_records(pb)) == 1


@pytest.mark.parametrize(("origin_port", "expected"), [(None, 554), (7070, 7070)])
def test_forward_mode_without_a_port_uses_the_origin_port(
    origin_port: int | None, expected: int
) -> None:
    """``rtsp://ORIGIN/path``: port 554, or ``origin_port`` when configured; the URL is
    passed on as the client wrote it."""
    settings = QuickTimeConfig(**({} if origin_port is None else {"origin_port": origin_port}))
    pb = Playbook(RtspProxyLayer, settings=settings, format_name="quicktime")
    pb.start()
    origin, sent = connect(pb, req("DESCRIBE", "rtsp://origin.example/a.mov", 1))
    assert origin.peer == ("origin.example", expected)
    assert parse_request(sent).uri == "rtsp://origin.example/a.mov"


# -- reverse mode -------------------------------------------------------------------------


def test_reverse_route_maps_the_path_and_every_url_coming_back() -> None:
    """The issue's route: ``rtsp://PROXY:1091/vod/a/b`` is ``rtsp://127.0.0.1:8554/a/b``; the
    origin's Content-Base, Content-Location, absolute SDP a=control and RTP-Info URLs come
    back as the proxy's."""
    route = Route(format="quicktime", prefix="/vod/", origin="rtsp://127.0.0.1:8554/")
    pb = make(routes=[route])
    origin, sent = connect(pb, req("DESCRIBE", "rtsp://proxy.example:1091/vod/a/b", 1))
    assert origin.peer == ("127.0.0.1", 8554)
    assert parse_request(sent).uri == "rtsp://127.0.0.1:8554/a/b"
    sdp = (
        b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=b\r\nt=0 0\r\n"
        b"a=control:rtsp://127.0.0.1:8554/a/b/\r\na=range:npt=0-4.0\r\n"
        b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
        b"a=control:rtsp://127.0.0.1:8554/a/b/trackID=1\r\n"
    )
    out = pb.origin_sends(
        origin,
        resp(
            200,
            1,
            "Content-Base: rtsp://127.0.0.1:8554/a/b/",
            "Content-Location: rtsp://127.0.0.1:8554/a/b",
            "Content-Type: application/sdp",
            body=sdp,
        ),
    )
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.headers.get("Content-Base") == "rtsp://proxy.example:1091/vod/a/b/"
    assert r.headers.get("Content-Location") == "rtsp://proxy.example:1091/vod/a/b"
    assert b"a=control:rtsp://proxy.example:1091/vod/a/b/\r\n" in r.body
    assert b"a=control:rtsp://proxy.example:1091/vod/a/b/trackID=1\r\n" in r.body
    assert b"8554" not in r.body
    # the client goes on with the URLs it was given; the origin hears its own
    out = pb.client_sends(
        req(
            "SETUP",
            "rtsp://proxy.example:1091/vod/a/b/trackID=1",
            2,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
        )
    )
    assert parse_request(pb.sent_to(origin, out)[0]).uri == "rtsp://127.0.0.1:8554/a/b/trackID=1"
    out = pb.origin_sends(
        origin, resp(200, 2, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s")
    )
    sid = pb.layer.session_id  # type: ignore[attr-defined]
    out = pb.client_sends(req("PLAY", "rtsp://proxy.example:1091/vod/a/b/", 3, f"Session: {sid}"))
    assert parse_request(pb.sent_to(origin, out)[0]).uri == "rtsp://127.0.0.1:8554/a/b/"
    out = pb.origin_sends(
        origin,
        resp(200, 3, "RTP-Info: url=rtsp://127.0.0.1:8554/a/b/trackID=1;seq=7;rtptime=0"),
    )
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.headers.get("RTP-Info") == (
        "url=rtsp://proxy.example:1091/vod/a/b/trackID=1;seq=7;rtptime=0"
    )


# -- origin errors ------------------------------------------------------------------------

BUSY = b"RTSP/1.0 503 Service Unavailable\r\nCSeq: 1\r\nRetry-After: 30\r\n\r\n"


@pytest.mark.parametrize("mode", ["forward", "reverse"])
def test_origin_503_reaches_the_client_with_its_reason_and_retry_after(mode: str) -> None:
    route = Route(format="quicktime", prefix="/vod/", origin="rtsp://127.0.0.1:8554/")
    pb = make(routes=[route])
    url = URL if mode == "forward" else "rtsp://127.0.0.1:1091/vod/a.mov"
    origin, _ = connect(pb, req("DESCRIBE", url, 41))
    (back,) = pb.sent_to_client(pb.origin_sends(origin, BUSY))
    assert back.startswith(b"RTSP/1.0 503 Service Unavailable\r\n")
    r = parse_one(back)
    assert r.cseq == 41 and r.headers.get("Retry-After") == "30"


def test_an_origins_own_reason_phrase_is_kept() -> None:
    pb = make()
    origin, _ = connect(pb, req("DESCRIBE", URL, 5))
    out = pb.origin_sends(origin, b"RTSP/1.0 503 Down For Maintenance\r\nCSeq: 1\r\n\r\n")
    assert pb.sent_to_client(out)[0].startswith(b"RTSP/1.0 503 Down For Maintenance\r\n")


# -- which URLs are ours --------------------------------------------------------------------

VOD = Route(format="quicktime", prefix="/vod/", origin="rtsp://127.0.0.1:8554/")


@pytest.mark.parametrize("host", ["192.0.2.9", "cache.example", "[2001:db8::9]"])
def test_another_host_on_our_port_is_forwarded(host: str) -> None:
    """A parent mediacache on the same port as ours, asked for a path no route of ours
    takes, is another server: forwarded as it is, not 404."""
    pb = make(routes=[VOD])
    pb.client.local = ("198.51.100.4", 1091)
    url = f"rtsp://{host}:1091/x"
    origin, sent = connect(pb, req("DESCRIBE", url, 1))
    assert origin.peer == (host.strip("[]"), 1091)
    assert parse_request(sent).uri == url


def test_forwarding_to_our_port_needs_forward_mode() -> None:
    pb = Playbook(RtspProxyLayer, settings=QuickTimeConfig(forward=False), format_name="quicktime")
    pb.start()
    out = pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.9:1091/x", 1))
    assert parse_one(pb.sent_to_client(out)[0]).status == 403
    assert not pb.opened_connections(out)


@pytest.mark.parametrize("host", ["192.0.2.9", "balancer.example", "127.0.0.1"])
def test_a_route_of_ours_takes_its_path_whatever_the_host(host: str) -> None:
    """Players name an L4 balancer in front of the nodes (DESIGN.md, "Deployment"): on our
    port, a path one of our routes takes is ours, by whatever address or name."""
    pb = make(routes=[VOD])
    pb.client.local = ("198.51.100.4", 1091)
    origin, sent = connect(pb, req("DESCRIBE", f"rtsp://{host}:1091/vod/x", 1))
    assert origin.peer == ("127.0.0.1", 8554)
    assert parse_request(sent).uri == "rtsp://127.0.0.1:8554/x"


@pytest.mark.parametrize(
    ("host", "local", "listen"),
    [
        ("198.51.100.4", ("198.51.100.4", 1091), "0.0.0.0:1091"),  # where it came in
        ("198.51.100.4", ("::ffff:198.51.100.4", 1091), "[::]:1091"),  # dual-stack socket
        ("198.51.100.4", None, "198.51.100.4:1091"),  # the listen address
        ("127.0.0.1", ("198.51.100.4", 1091), "0.0.0.0:1091"),  # loopback, wildcard listen
        ("[::1]", None, "[::]:1091"),
        ("localhost", ("198.51.100.4", 1091), "0.0.0.0:1091"),
        ("LocalHost", None, "0.0.0.0:1091"),
    ],
)
def test_our_own_host_with_no_route_is_404(
    host: str, local: tuple[str, int] | None, listen: str
) -> None:
    """ffmpeg and VLC put the proxy's own address in the URL: with no route for the path
    that is a 404 here, never a connection to ourselves."""
    pb = Playbook(
        RtspProxyLayer,
        settings=QuickTimeConfig(listen=listen),
        format_name="quicktime",
        routes=[VOD],
    )
    pb.client.local = local
    pb.start()
    out = pb.client_sends(req("DESCRIBE", f"rtsp://{host}:1091/other", 2))
    assert parse_one(pb.sent_to_client(out)[0]).status == 404
    assert not pb.opened_connections(out)


@pytest.mark.parametrize("host", ["proxy.example", "192.0.2.9"])
def test_options_of_the_bare_server_url_on_our_port_is_answered_here(host: str) -> None:
    """VLC's realrtsp greets with ``OPTIONS rtsp://HOST:PORT``, HOST being whatever name the
    user typed for us: answered here, as before, rather than forwarded to that name."""
    pb = make(routes=[VOD])
    out = pb.client_sends(req("OPTIONS", f"rtsp://{host}:1091", 1))
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.status == 200 and "DESCRIBE" in (r.headers.get("Public") or "")
    assert not pb.opened_connections(out)


def test_loopback_is_not_ours_when_we_listen_on_one_address() -> None:
    pb = Playbook(
        RtspProxyLayer,
        settings=QuickTimeConfig(listen="198.51.100.4:1091"),
        format_name="quicktime",
    )
    pb.start()
    origin, _ = connect(pb, req("DESCRIBE", "rtsp://127.0.0.2:1091/x", 1))
    assert origin.peer == ("127.0.0.2", 1091)


def test_a_forwarding_loop_ends_with_508() -> None:
    """An address that is ours behind a NAT is forwarded to, and comes back with one more of
    our Via entries each time; after 8 the loop is refused before any connection."""
    looped = [f"Via: {VIA}"] * 4 + [f"Via: {VIA}, {VIA}, {VIA}, {VIA}"]  # 8 entries
    pb = make()
    out = pb.client_sends(req("DESCRIBE", "rtsp://203.0.113.5:1091/vod/x", 1, *looped))
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.status == 508 and "Loop" in r.reason
    assert not pb.opened_connections(out)
    assert any("loop" in c.message for c in pb.of_type(out, Log))
    # a request from a child mediacache (one Via of ours) is served as usual
    pb = make()
    origin, sent = connect(pb, req("DESCRIBE", "rtsp://203.0.113.5:1091/vod/x", 1, *looped[:1]))
    assert origin.peer == ("203.0.113.5", 1091)
    assert parse_request(sent).headers.get_all("Via") == [VIA, VIA]
