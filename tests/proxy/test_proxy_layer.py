"""Playbooks for the RTSP proxy layer: event in, commands out, no sockets."""

from __future__ import annotations

import pytest

from mediacache.config import Route
from mediacache.rtsp.interleaved import build_interleaved
from mediacache.rtsp.message import Response, RtspReader
from mediacache.rtsp.proxy import RtspProxyLayer
from mediacache.sansio.commands import (
    CloseConnection,
    EmitRecord,
    OpenConnection,
    SetTimer,
    WatchDatagrams,
)
from mediacache.sansio.connection import Connection
from mediacache.testing.playbook import Playbook
from mediacache_quicktime.plugin import QuickTimeConfig

ORIGIN_SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=clip\r\nt=0 0\r\na=control:*\r\n"
    b"a=range:npt=0-4.0\r\n"
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    b"a=control:rtsp://127.0.0.1:8554/vod/clip.mp4/stream=0\r\n"
)


def req(method: str, uri: str, cseq: int | None, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {uri} RTSP/1.0"]
    if cseq is not None:
        lines.append(f"CSeq: {cseq}")
    lines += headers
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def resp(status: int, cseq: int, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"RTSP/1.0 {status} OK", f"CSeq: {cseq}", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def parse_one(data: bytes) -> Response:
    reader = RtspReader()
    reader.receive_data(data)
    ev = reader.next_event()
    assert isinstance(ev, Response)
    return ev


def parse_request(data: bytes):  # type: ignore[no-untyped-def]
    reader = RtspReader()
    reader.receive_data(data)
    return reader.next_event()


def make(**kw) -> Playbook:  # type: ignore[no-untyped-def]
    pb = Playbook(RtspProxyLayer, settings=QuickTimeConfig(), format_name="quicktime", **kw)
    pb.start()
    return pb


def reverse() -> Playbook:
    route = Route(format="quicktime", prefix="/vod/", origin="rtsp://127.0.0.1:8554/vod/")
    return make(routes=[route])


def connect(pb: Playbook, data: bytes) -> tuple[Connection, bytes]:
    """Client sends ``data``; the layer opens the origin; returns (origin, what it got)."""
    out = pb.client_sends(data)
    (origin,) = pb.opened_connections(out)
    out = pb.opened(origin)
    (sent,) = pb.sent_to(origin, out)
    return origin, sent


def test_start_arms_the_idle_timer() -> None:
    pb = Playbook(RtspProxyLayer, settings=QuickTimeConfig(session_timeout=7))
    out = pb.start()
    assert SetTimer("client-timeout", 7) in out


def test_options_star_is_answered_locally() -> None:
    pb = make()
    out = pb.client_sends(req("OPTIONS", "*", 1))
    (data,) = pb.sent_to_client(out)
    r = parse_one(data)
    assert r.status == 200 and r.cseq == 1
    assert "DESCRIBE" in (r.headers.get("Public") or "")
    assert not pb.opened_connections(out)


def test_missing_cseq_gets_400_and_the_connection_lives() -> None:
    pb = make()
    out = pb.client_sends(req("DESCRIBE", "rtsp://10.0.0.1/a", None))
    (data,) = pb.sent_to_client(out)
    assert parse_one(data).status == 400
    assert not pb.of_type(out, CloseConnection)


def test_forward_mode_connects_to_the_named_origin_and_keeps_the_url() -> None:
    pb = make()
    out = pb.client_sends(
        req("DESCRIBE", "rtsp://192.0.2.7/movies/a.mov", 5, "Accept: application/sdp")
    )
    (origin,) = pb.opened_connections(out)
    assert origin.peer == ("192.0.2.7", 554)
    out = pb.opened(origin)
    (sent,) = pb.sent_to(origin, out)
    fwd = parse_request(sent)
    assert fwd.uri == "rtsp://192.0.2.7/movies/a.mov"
    assert fwd.headers.get("Accept") == "application/sdp"
    assert fwd.headers.get("Via") == "RTSP/1.0 mediacache"
    assert fwd.cseq == 1  # our own CSeq space toward the origin
    out = pb.origin_sends(origin, resp(200, 1, "Content-Type: application/sdp", body=ORIGIN_SDP))
    (back,) = pb.sent_to_client(out)
    r = parse_one(back)
    assert r.status == 200 and r.cseq == 5
    assert r.body == ORIGIN_SDP  # forward mode: no rewriting


def test_forward_mode_with_explicit_port_and_parent() -> None:
    pb = make(parent="rtsp://127.0.0.1:11091")
    out = pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7:8554/a", 1))
    (origin,) = pb.opened_connections(out)
    assert origin.peer == ("127.0.0.1", 11091)  # through the parent, URL unchanged
    out = pb.opened(origin)
    assert parse_request(pb.sent_to(origin, out)[0]).uri == "rtsp://192.0.2.7:8554/a"


def test_forward_disabled_is_403() -> None:
    pb = Playbook(RtspProxyLayer, settings=QuickTimeConfig(forward=False), format_name="quicktime")
    out = pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 1))
    assert parse_one(pb.sent_to_client(out)[0]).status == 403


def test_reverse_mode_maps_urls_both_ways() -> None:
    pb = reverse()
    origin, sent = connect(pb, req("DESCRIBE", "rtsp://proxy.example:1091/vod/clip.mp4", 2))
    assert origin.peer == ("127.0.0.1", 8554)
    assert parse_request(sent).uri == "rtsp://127.0.0.1:8554/vod/clip.mp4"
    out = pb.origin_sends(
        origin,
        resp(
            200,
            1,
            "Content-Base: rtsp://127.0.0.1:8554/vod/clip.mp4/",
            "Content-Type: application/sdp",
            body=ORIGIN_SDP,
        ),
    )
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.headers.get("Content-Base") == "rtsp://proxy.example:1091/vod/clip.mp4/"
    assert b"a=control:rtsp://proxy.example:1091/vod/clip.mp4/stream=0" in r.body
    assert b"127.0.0.1:8554" not in r.body


def test_no_route_on_our_own_port_is_404() -> None:
    pb = reverse()
    # our own host (loopback under the default wildcard listen); another host with no route
    # of ours is forwarded (test_proxy_forward.py)
    out = pb.client_sends(req("DESCRIBE", "rtsp://127.0.0.1:1091/other/x", 1))
    assert parse_one(pb.sent_to_client(out)[0]).status == 404
    assert not pb.opened_connections(out)


def test_unreachable_origin_is_502_with_reason_and_log() -> None:
    pb = make()
    out = pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 3))
    (origin,) = pb.opened_connections(out)
    out = pb.opened(origin, "Connection refused")
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.status == 502 and r.cseq == 3
    assert "Connection refused" in (r.headers.get("X-Mediacache-Error") or "")
    assert any("unreachable" in c.message for c in out if type(c).__name__ == "Log")


def test_origin_connect_timeout_is_504() -> None:
    pb = make()
    out = pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 3))
    (origin,) = pb.opened_connections(out)
    out = pb.opened(origin, "connect timed out", timed_out=True)
    assert parse_one(pb.sent_to_client(out)[0]).status == 504


def test_origin_silent_is_504() -> None:
    pb = make()
    _origin, _ = connect(pb, req("DESCRIBE", "rtsp://192.0.2.7/a", 3))
    out = pb.timer("origin-response")
    assert parse_one(pb.sent_to_client(out)[0]).status == 504


def test_origin_errors_reach_the_client_unchanged() -> None:
    pb = make()
    origin, _ = connect(pb, req("DESCRIBE", "rtsp://192.0.2.7/a", 3))
    out = pb.origin_sends(origin, resp(401, 1, 'WWW-Authenticate: Basic realm="x"'))
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.status == 401 and r.headers.get("WWW-Authenticate") == 'Basic realm="x"'


def test_play_before_setup_is_455_and_unknown_session_454() -> None:
    pb = make()
    out = pb.client_sends(req("PLAY", "rtsp://192.0.2.7/a", 1))
    assert parse_one(pb.sent_to_client(out)[0]).status == 455
    out = pb.client_sends(req("SETUP", "rtsp://192.0.2.7/a/t0", 2, "Session: nope"))
    assert parse_one(pb.sent_to_client(out)[0]).status == 454


def test_unknown_method_is_501() -> None:
    pb = make()
    out = pb.client_sends(req("RECORD", "rtsp://192.0.2.7/a", 1))
    assert parse_one(pb.sent_to_client(out)[0]).status == 501


def setup_udp(pb: Playbook) -> tuple[Connection, bytes]:
    origin, sent = connect(
        pb,
        req(
            "SETUP",
            "rtsp://192.0.2.7/a/stream=0",
            4,
            "Transport: RTP/AVP/UDP;unicast;client_port=5000-5001",
        ),
    )
    return origin, sent


def test_setup_udp_asks_the_origin_for_tcp_and_answers_udp() -> None:
    pb = make()
    origin, sent = setup_udp(pb)
    fwd = parse_request(sent)
    assert fwd.headers.get("Transport") == "RTP/AVP/TCP;unicast;interleaved=0-1"
    out = pb.origin_sends(
        origin,
        resp(
            200,
            1,
            'Transport: RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=1234ABCD;mode="PLAY"',
            "Session: originsess;timeout=60",
        ),
    )
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.status == 200
    transport = r.headers.get("Transport") or ""
    assert "client_port=5000-5001" in transport and "server_port=6970-6971" in transport
    assert "ssrc=1234ABCD" in transport
    session = r.headers.get("Session") or ""
    assert session.split(";")[0] != "originsess"  # our own session id
    assert WatchDatagrams(("127.0.0.1", 5001)) in out
    # media: origin channel 0 goes to the client's RTP port, channel 1 to its RTCP port
    pb.origin_sends(origin, build_interleaved(0, b"rtp-1") + build_interleaved(1, b"rtcp-1"))
    rtp, rtcp = pb.dataplane.sinks
    assert rtp.target == ("127.0.0.1", 5000) and rtp.payloads == [b"rtp-1"]
    assert rtcp.target == ("127.0.0.1", 5001) and rtcp.payloads == [b"rtcp-1"]
    # a receiver report from the client reaches the origin on its RTCP channel
    out = pb.datagram(("127.0.0.1", 5001), b"RR")
    assert pb.sent_to(origin, out) == [build_interleaved(1, b"RR")]


def test_setup_tcp_interleaved_maps_channels() -> None:
    pb = make()
    origin, _ = connect(
        pb,
        req(
            "SETUP",
            "rtsp://192.0.2.7/a/stream=0",
            4,
            "Transport: RTP/AVP/TCP;unicast;interleaved=6-7",
        ),
    )
    out = pb.origin_sends(
        origin,
        resp(200, 1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s1"),
    )
    r = parse_one(pb.sent_to_client(out)[0])
    assert "interleaved=6-7" in (r.headers.get("Transport") or "")
    pb.origin_sends(origin, build_interleaved(0, b"x" * 100))
    rtp = pb.dataplane.sinks[0]
    assert rtp.target[1] == 6 and rtp.payloads == [b"x" * 100]


def test_unusable_client_transport_is_461() -> None:
    pb = make()
    out = pb.client_sends(
        req("SETUP", "rtsp://192.0.2.7/a/t", 1, "Transport: RTP/AVP;multicast;port=5000-5001")
    )
    (origin,) = pb.opened_connections(out)
    out = pb.opened(origin)
    assert parse_one(pb.sent_to_client(out)[0]).status == 461


def test_client_timeout_tears_down_the_origin_session_and_logs() -> None:
    pb = make()
    origin, _ = setup_udp(pb)
    pb.origin_sends(
        origin, resp(200, 1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s1")
    )
    out = pb.timer("client-timeout")
    (teardown,) = pb.sent_to(origin, out)
    td = parse_request(teardown)
    assert td.method == "TEARDOWN" and td.headers.get("Session") == "s1"
    assert CloseConnection(pb.client) in out and CloseConnection(origin) in out
    (record,) = [c.record for c in pb.of_type(out, EmitRecord)]
    assert record.reason == "timeout" and record.result == "PASS"


def test_keepalive_follows_the_origin_timeout() -> None:
    pb = make()
    origin, _ = setup_udp(pb)
    out = pb.origin_sends(
        origin,
        resp(
            200,
            1,
            "Transport: RTP/AVP/TCP;unicast;interleaved=0-1",
            "Session: s1;timeout=20",
            "Public: OPTIONS, GET_PARAMETER",
        ),
    )
    assert SetTimer("origin-keepalive", 10.0) in out
    pb.clock.now += 10
    out = pb.timer("origin-keepalive")
    (ka,) = pb.sent_to(origin, out)
    assert parse_request(ka).headers.get("Session") == "s1"


def test_access_denied_is_403_logged_and_closed() -> None:
    pb = make(access_allowed=lambda host: False)
    out = pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 1))
    assert parse_one(pb.sent_to_client(out)[0]).status == 403
    assert CloseConnection(pb.client) in out
    (record,) = [c.record for c in pb.of_type(out, EmitRecord)]
    assert record.result == "DENIED" and record.status == 403


def test_access_hook_may_refuse() -> None:
    class Hook:
        def mediacache_access_check(self, **kw):  # type: ignore[no-untyped-def]
            return False

        def mediacache_resolve_origin(self, **kw):  # type: ignore[no-untyped-def]
            return None

    pb = make(hook=Hook())
    out = pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 1))
    assert parse_one(pb.sent_to_client(out)[0]).status == 403


@pytest.mark.parametrize(
    "garbage",
    [b"\x00\x01\x02garbage\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"A" * 20000],
)
def test_garbage_gets_an_error_and_a_clean_close(garbage: bytes) -> None:
    pb = make()
    out = pb.client_sends(garbage)
    replies = pb.sent_to_client(out)
    assert replies and parse_one(replies[0]).status in (400, 414, 505)
    assert CloseConnection(pb.client, drain=True) in out  # the reply survives a busy sender


def test_client_leaving_mid_play_tears_down_and_emits_one_record() -> None:
    pb = make()
    origin, _ = setup_udp(pb)
    pb.origin_sends(
        origin, resp(200, 1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s1")
    )
    out = pb.closed(pb.client)
    assert parse_request(pb.sent_to(origin, out)[0]).method == "TEARDOWN"
    records = [c for _, cmds in pb.history for c in cmds if isinstance(c, EmitRecord)]
    assert len(records) == 1 and records[0].record.reason == "client closed"
    assert pb.closed(origin) == []  # nothing after the end


def test_origin_closing_mid_session_ends_the_client() -> None:
    pb = make()
    origin, _ = setup_udp(pb)
    pb.origin_sends(
        origin, resp(200, 1, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s1")
    )
    out = pb.closed(origin)
    assert CloseConnection(pb.client) in out
    assert not [c for c in out if isinstance(c, OpenConnection)]


def test_a_feed_owner_refuses_backpressure() -> None:
    pb = make()
    assert pb.layer.backpressure is True  # type: ignore[attr-defined]
    pb.layer.feed_role = "owner"  # type: ignore[attr-defined]
    assert pb.layer.backpressure is False  # type: ignore[attr-defined]


def _cached_playbook():  # type: ignore[no-untyped-def]
    from mediacache.cache.service import CacheService
    from mediacache.cache.store import CacheStore

    pb = make()
    pb.ctx.cache = CacheService(CacheStore(None, memory_limit=10**7, disk_limit=0))
    return pb


def _describe_setup_play(
    pb: Playbook, describe_headers: tuple[str, ...]
) -> tuple[Connection, list]:  # type: ignore[type-arg]
    origin, _ = connect(pb, req("DESCRIBE", "rtsp://192.0.2.7/a", 1))
    pb.origin_sends(
        origin,
        resp(200, 1, *describe_headers, "Content-Base: rtsp://192.0.2.7/a/", body=ORIGIN_SDP),
    )
    pb.client_sends(
        req("SETUP", "rtsp://192.0.2.7/a/stream=0", 2, "Transport: RTP/AVP/TCP;interleaved=0-1")
    )
    pb.origin_sends(
        origin, resp(200, 2, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s")
    )
    session = pb.layer.session_id  # type: ignore[attr-defined]
    out = pb.client_sends(req("PLAY", "rtsp://192.0.2.7/a", 3, f"Session: {session}"))
    return origin, out


@pytest.mark.parametrize("directive", ["no-cache", "no-store", "private, no-store"])
def test_origin_no_cache_means_pass(directive: str) -> None:
    pb = _cached_playbook()
    origin, out = _describe_setup_play(pb, (f"Cache-Control: {directive}",))
    assert parse_request(pb.sent_to(origin, out)[0]).method == "PLAY"  # forwarded, no fill
    assert pb.layer.cache_mode == "PASS"  # type: ignore[attr-defined]
    pb.origin_sends(origin, resp(200, 3, "Range: npt=0-4"))
    assert pb.layer.recorder is None and pb.ctx.cache.store.stats().fills == 0  # type: ignore[attr-defined, union-attr]


def test_an_on_demand_clip_is_a_miss_and_fills() -> None:
    pb = _cached_playbook()
    origin, out = _describe_setup_play(pb, ())
    assert parse_request(pb.sent_to(origin, out)[0]).method == "PLAY"
    assert pb.layer.cache_mode == "MISS"  # type: ignore[attr-defined]
    pb.origin_sends(
        origin,
        resp(200, 3, "RTP-Info: url=rtsp://192.0.2.7/a/stream=0;seq=1;rtptime=0", "Range: npt=0-4"),
    )
    assert pb.layer.recorder is not None  # type: ignore[attr-defined]


def test_a_hook_may_forbid_caching_authenticated_content() -> None:
    class Hook:
        def mediacache_access_check(self, **kw):  # type: ignore[no-untyped-def]
            return None

        def mediacache_resolve_origin(self, **kw):  # type: ignore[no-untyped-def]
            return None

        def mediacache_is_live(self, **kw):  # type: ignore[no-untyped-def]
            return None

        def mediacache_cache_variant(self, **kw):  # type: ignore[no-untyped-def]
            return None

        def mediacache_cache_allowed(self, **kw):  # type: ignore[no-untyped-def]
            return False

    from mediacache.cache.service import CacheService
    from mediacache.cache.store import CacheStore

    pb = make(hook=Hook())
    pb.ctx.cache = CacheService(CacheStore(None, memory_limit=10**7, disk_limit=0))
    origin, _ = connect(pb, req("DESCRIBE", "rtsp://192.0.2.7/a", 1, "Authorization: Basic dTpw"))
    pb.origin_sends(origin, resp(200, 1, body=ORIGIN_SDP))
    pb.client_sends(
        req("SETUP", "rtsp://192.0.2.7/a/stream=0", 2, "Transport: RTP/AVP/TCP;interleaved=0-1")
    )
    pb.origin_sends(
        origin, resp(200, 2, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s")
    )
    pb.client_sends(req("PLAY", "rtsp://192.0.2.7/a", 3, f"Session: {pb.layer.session_id}"))  # type: ignore[attr-defined]
    assert pb.layer.cache_mode == "PASS"  # type: ignore[attr-defined]
