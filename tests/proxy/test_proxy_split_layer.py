"""Playbooks of the RTSP proxy layer's live splitting (issue 4): live detection, one upstream
per (live URL, variant) even when the first PLAYs cross, linger, reconnection backoff, and the
parent fallback. Several sessions share one SplitterService; a fake clock; no sockets."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from test_proxy_layer import make, parse_one, parse_request, req, resp

from mediacache.config import Route
from mediacache.rtsp.caching import is_on_demand
from mediacache.rtsp.interleaved import build_interleaved
from mediacache.rtsp.message import Request
from mediacache.rtsp.proxy import FEED_WAIT_GRACE, RtspDialect, RtspProxyLayer
from mediacache.rtsp.sdp import parse_sdp
from mediacache.sansio.commands import (
    CloseConnection,
    Command,
    EmitRecord,
    OpenConnection,
    SetTimer,
)
from mediacache.sansio.connection import Connection
from mediacache.splitter import FeedTrack, LiveFeed, SplitterService
from mediacache.testing.playbook import Playbook, RecordingSink
from mediacache_quicktime.plugin import QuickTimeConfig

URL = "rtsp://127.0.0.1:1091/a/x"
BASE = "rtsp://192.0.2.7/a/x/"
VOD = (
    b"v=0\r\ns=x\r\nt=0 0\r\na=control:*\r\na=range:npt=0-4.0\r\n"
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=control:stream=0\r\n"
)
LIVE_NOW = VOD.replace(b"npt=0-4.0", b"npt=now-")
LIVE_OPEN = VOD.replace(b"npt=0-4.0", b"npt=0-")
NO_RANGE = VOD.replace(b"a=range:npt=0-4.0\r\n", b"")
REAL_LIVE = VOD.replace(b"a=control:*\r\n", b"a=control:*\r\na=LiveStream:integer;1\r\n")
"""A closed range, but Real's SDP says live (RealServer's live streams carry both)."""


class Hook:
    """The hooks the layer calls; ``mediacache_is_live`` answers ``live``."""

    def __init__(self, live: bool | None) -> None:
        self.live = live

    def mediacache_access_check(self, **kw: Any) -> None:
        return None

    def mediacache_resolve_origin(self, **kw: Any) -> None:
        return None

    def mediacache_is_live(self, **kw: Any) -> bool | None:
        return self.live

    def mediacache_cache_variant(self, **kw: Any) -> None:
        return None

    def mediacache_cache_allowed(self, **kw: Any) -> None:
        return None


def viewer(
    splitter: SplitterService | None,
    sdp: bytes = LIVE_NOW,
    *,
    live: bool | None = None,
    hook: Hook | None = None,
    pb: Playbook | None = None,
) -> tuple[Playbook, Connection]:
    """A client of the live URL (reverse route ``/a/``, ``live`` its setting) through DESCRIBE
    and SETUP (TCP interleaved), sharing ``splitter`` with the other viewers."""
    if pb is None:
        route = Route(format="quicktime", prefix="/a/", origin="rtsp://192.0.2.7/a/", live=live)
        pb = make(routes=[route], hook=hook)
    pb.ctx.splitter = splitter
    (origin,) = pb.opened_connections(pb.client_sends(req("DESCRIBE", URL, 1)))
    pb.opened(origin)
    pb.origin_sends(origin, resp(200, 1, f"Content-Base: {BASE}", body=sdp))
    pb.client_sends(req("SETUP", f"{URL}/stream=0", 2, "Transport: RTP/AVP/TCP;interleaved=0-1"))
    pb.origin_sends(
        origin, resp(200, 2, "Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: s")
    )
    return pb, origin


def play(pb: Playbook, cseq: int = 3) -> list[Command]:
    return pb.client_sends(req("PLAY", URL, cseq, f"Session: {pb.layer.session_id}"))  # type: ignore[attr-defined]


def origin_methods(pb: Playbook, origin: Connection) -> list[str]:
    """Every request the session ever sent to ``origin``, in order."""
    return [
        parse_request(data).method for _, out in pb.history for data in pb.sent_to(origin, out)
    ]


def last_request(pb: Playbook, origin: Connection) -> Request:
    return parse_request([d for _, out in pb.history for d in pb.sent_to(origin, out)][-1])  # type: ignore[no-any-return]


def replies(pb: Playbook, out: list[Command]) -> list[tuple[int, int | None]]:
    return [(r.status, r.cseq) for r in map(parse_one, pb.sent_to_client(out))]


def records(pb: Playbook) -> list[Any]:
    return [c.record for _, out in pb.history for c in out if isinstance(c, EmitRecord)]


def deliver_posted(pb: Playbook) -> list[Command]:
    """Run what other sessions posted to ``pb`` (a timer nobody set makes the Playbook go)."""
    return pb.timer("nothing")


def mode(pb: Playbook) -> str | None:
    return pb.layer.cache_mode  # type: ignore[attr-defined,no-any-return]


RTP = bytes([0x80, 96, 0, 7, 0, 0, 0, 9, 0, 0, 0, 1]) + b"frame"


# -- one upstream per (live URL, variant), even when the first PLAYs cross --------------------


def test_two_plays_that_cross_make_one_origin_play_and_the_second_joins() -> None:
    splitter = SplitterService()
    (a, oa), (b, ob) = viewer(splitter), viewer(splitter)
    out_a, out_b = play(a), play(b)
    assert [parse_request(d).method for d in a.sent_to(oa, out_a)] == ["PLAY"]
    assert b.sent_to(ob, out_b) == [] and b.sent_to_client(out_b) == []  # b waits, unanswered
    assert SetTimer("feed-wait", 20.0 + FEED_WAIT_GRACE) in out_b
    a.origin_sends(oa, resp(200, 3, "Range: npt=now-", "Session: s"))
    out_b = deliver_posted(b)  # the feed-start notice
    assert replies(b, out_b) == [(200, 3)]
    assert parse_one(b.sent_to_client(out_b)[0]).headers.get("Range") == "npt=now-"
    assert (mode(a), mode(b)) == ("FEED", "SPLIT")
    assert "PLAY" not in origin_methods(b, ob)  # b's origin session: accounting only
    a.origin_sends(oa, build_interleaved(0, RTP))
    assert a.dataplane.sinks[0].payloads == [RTP] and b.dataplane.sinks[0].payloads == [RTP]
    b.closed(b.client)
    a.closed(a.client)
    assert [r.result for r in records(a) + records(b)] == ["PASS", "SPLIT"]  # the owner: PASS


def test_when_the_owners_play_fails_one_waiter_starts_the_feed_and_the_next_joins() -> None:
    splitter = SplitterService()
    (a, oa), (b, ob), (c, oc) = viewer(splitter), viewer(splitter), viewer(splitter)
    play(a), play(b), play(c)
    out_a = a.origin_sends(oa, resp(503, 3))
    assert replies(a, out_a) == [(503, 3)] and mode(a) is None and not splitter.feeds
    out_b = deliver_posted(b)  # b decides again first: it owns the next attempt
    assert [parse_request(d).method for d in b.sent_to(ob, out_b)] == ["PLAY"]
    assert b.sent_to_client(out_b) == []  # its client gets the origin's answer
    out_c = deliver_posted(c)
    assert c.sent_to(oc, out_c) == [] and c.sent_to_client(out_c) == []  # c waits on, for b
    out_b = b.origin_sends(ob, resp(200, 3, "Session: s"))
    assert replies(b, out_b) == [(200, 3)] and mode(b) == "FEED"
    assert replies(c, deliver_posted(c)) == [(200, 3)] and mode(c) == "SPLIT"
    assert "PLAY" not in origin_methods(c, oc)
    assert [m for m in origin_methods(a, oa) + origin_methods(b, ob) if m == "PLAY"] == ["PLAY"] * 2


def test_an_owner_leaving_before_the_origin_answered_hands_the_start_to_a_waiter() -> None:
    splitter = SplitterService()
    (a, _oa), (b, ob) = viewer(splitter), viewer(splitter)
    play(a), play(b)
    a.closed(a.client)
    out_b = deliver_posted(b)
    assert [parse_request(d).method for d in b.sent_to(ob, out_b)] == ["PLAY"]
    b.origin_sends(ob, resp(200, 3, "Session: s"))
    assert mode(b) == "FEED" and b.layer.feed_role == "owner"  # type: ignore[attr-defined]


def test_the_wait_is_bounded_and_ends_with_a_clean_504() -> None:
    splitter = SplitterService()
    (a, _oa), (b, ob) = viewer(splitter), viewer(splitter)
    play(a), play(b)  # the origin never answers a's PLAY (nor times out: a broken owner)
    keepalive = b.client_sends(req("GET_PARAMETER", URL, 4, f"Session: {b.layer.session_id}"))  # type: ignore[attr-defined]
    assert b.sent_to(ob, keepalive) == []  # queued behind the held PLAY
    out = b.timer("feed-wait")
    assert replies(b, out) == [(504, 3), (504, 4)]
    assert [parse_request(d).method for d in b.sent_to(ob, out)] == ["TEARDOWN"]
    assert CloseConnection(b.client) in out
    assert "PLAY" not in origin_methods(b, ob)
    (record,) = records(b)
    assert record.status == 504 and record.reason == "the live feed did not start in time"
    (starting,) = splitter.starting.values()  # a's start goes on; b no longer waits for it
    assert starting.owner is a.layer and not starting.waiters


class LateVariant(RtspDialect):
    """Real's way: the variant is known at the client's SET_PARAMETER, after its PLAY."""

    subscribed = False

    def variant(self, relative_controls: list[str]) -> str | None:
        return "x" if self.subscribed else None

    def request_to_origin(self, req: Request, headers: Any) -> Any:
        self.subscribed = self.subscribed or req.method == "SET_PARAMETER"
        return headers


def test_a_deferred_decision_waits_for_a_starting_feed_too() -> None:
    splitter = SplitterService()
    route = Route(format="quicktime", prefix="/a/", origin="rtsp://192.0.2.7/a/")
    pbs = [
        Playbook(
            lambda ctx: RtspProxyLayer(ctx, LateVariant()),
            settings=QuickTimeConfig(),
            format_name="quicktime",
            routes=[route],
        )
        for _ in range(2)
    ]
    for pb in pbs:
        pb.start()
    (a, oa), (b, ob) = (viewer(splitter, pb=pb) for pb in pbs)
    for pb in (a, b):
        assert replies(pb, play(pb)) == [(200, 3)] and mode(pb) == "DEFER"  # answered here
    subscribe = ("SET_PARAMETER", URL, 4)
    out_a = a.client_sends(req(*subscribe, f"Session: {a.layer.session_id}"))  # type: ignore[attr-defined]
    assert [parse_request(d).method for d in a.sent_to(oa, out_a)] == ["PLAY", "SET_PARAMETER"]
    out_b = b.client_sends(req(*subscribe, f"Session: {b.layer.session_id}"))  # type: ignore[attr-defined]
    assert b.sent_to(ob, out_b) == [] and b.sent_to_client(out_b) == [] and mode(b) == "WAIT"
    a.origin_sends(oa, resp(200, 3, "Session: s"))  # the deferred PLAY
    assert mode(a) == "FEED" and splitter.feeds
    assert replies(b, deliver_posted(b)) == [(200, 4)] and mode(b) == "SPLIT"
    assert not {"PLAY", "SET_PARAMETER"} & set(origin_methods(b, ob))


# -- live detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sdp", "route_live", "hook_live", "split"),
    [
        pytest.param(LIVE_NOW, None, None, True, id="npt=now-"),
        pytest.param(LIVE_OPEN, None, None, True, id="npt=0-"),
        pytest.param(NO_RANGE, None, None, True, id="no-range"),
        pytest.param(VOD, None, None, False, id="npt=0-4"),
        pytest.param(REAL_LIVE, None, None, True, id="real-livestream"),
        pytest.param(VOD, None, True, True, id="hook-live"),
        pytest.param(LIVE_NOW, None, False, False, id="hook-on-demand"),
        pytest.param(VOD, True, None, True, id="route-live"),
        pytest.param(LIVE_NOW, False, None, False, id="route-on-demand"),
        pytest.param(VOD, False, True, False, id="route-on-demand-beats-hook"),
        pytest.param(LIVE_NOW, True, False, True, id="route-live-beats-hook"),
    ],
)
def test_live_detection(
    sdp: bytes, route_live: bool | None, hook_live: bool | None, split: bool
) -> None:
    hook = Hook(hook_live) if hook_live is not None else None
    pb, origin = viewer(SplitterService(), sdp, live=route_live, hook=hook)
    out = play(pb)
    assert pb.layer.described.on_demand is not split  # type: ignore[attr-defined]
    assert [parse_request(d).method for d in pb.sent_to(origin, out)] == ["PLAY"]
    assert mode(pb) == ("FEED" if split else "PASS")  # no cache here: on demand is relayed


def test_reals_livestream_attribute_means_live_whatever_the_range() -> None:
    assert is_on_demand(parse_sdp(VOD))
    assert not is_on_demand(parse_sdp(REAL_LIVE))
    assert is_on_demand(parse_sdp(REAL_LIVE.replace(b"integer;1", b"integer;0")))


# -- lifecycle: linger, reconnection ----------------------------------------------------------


def _owner(splitter: SplitterService) -> tuple[Playbook, Connection]:
    pb, origin = viewer(splitter)
    play(pb)
    pb.origin_sends(origin, resp(200, 3, "Session: s"))
    assert pb.layer.feed_role == "owner"  # type: ignore[attr-defined]
    return pb, origin


def _joiner(splitter: SplitterService) -> tuple[Playbook, Connection]:
    pb, origin = viewer(splitter)
    assert replies(pb, play(pb)) == [(200, 3)] and mode(pb) == "SPLIT"
    return pb, origin


def test_a_viewer_back_within_the_linger_joins_the_same_feed_which_ends_linger_after() -> None:
    splitter = SplitterService(linger=5.0)
    a, oa = _owner(splitter)
    (feed,) = splitter.feeds.values()
    out = a.closed(a.client)  # the last viewer left: the feed lingers
    assert SetTimer("feed-linger", 1.0) in out and a.layer.background  # type: ignore[attr-defined]
    a.timer("feed-linger")  # the idle count starts
    a.clock.now += 4.0
    assert not a.layer.closed and "TEARDOWN" not in origin_methods(a, oa)  # type: ignore[attr-defined]
    a.timer("feed-linger")
    b, ob = _joiner(splitter)  # 4 s later: within the linger
    assert b.layer.feed is feed  # type: ignore[attr-defined]
    a.origin_sends(oa, build_interleaved(0, RTP))
    assert b.dataplane.sinks[0].payloads == [RTP]
    # a viewer again: its own session takes the feed over (the origin counts no gone viewer)
    take_over(b, ob)
    assert feed.owner is b.layer and not a.layer.closed  # type: ignore[attr-defined]
    out = deliver_posted(a)
    assert [parse_request(d).method for d in a.sent_to(oa, out)] == ["TEARDOWN"]
    assert a.layer.closed and splitter.feeds and not feed.ended  # type: ignore[attr-defined]
    b.clock.now += 10.0
    b.closed(b.client)  # the last viewer left: b's session lingers now
    b.timer("feed-linger")  # idle from now
    b.clock.now += 4.5
    out = b.timer("feed-linger")
    assert not b.layer.closed and b.sent_to(ob, out) == []  # type: ignore[attr-defined]
    b.clock.now += 0.5
    out = b.timer("feed-linger")
    assert [parse_request(d).method for d in b.sent_to(ob, out)] == ["TEARDOWN"]
    assert CloseConnection(ob) in out and not splitter.feeds and feed.ended
    assert [(r.result, r.reason) for r in records(b)] == [
        ("SPLIT", "client closed"),
        ("SPLIT", "live feed released (no viewers)"),  # b's origin bytes after its client
    ]


def take_over(pb: Playbook, origin: Connection, status: int = 200) -> list[Command]:
    """Deliver the ``feed-handover`` notice posted to ``pb``: its session PLAYs at the origin
    (its own session, no Range), which answers ``status``."""
    deliver_posted(pb)
    play_req = last_request(pb, origin)
    assert (play_req.method, play_req.uri) == ("PLAY", BASE)
    assert play_req.headers.get("Session") == "s" and "Range" not in play_req.headers
    return pb.origin_sends(origin, resp(status, play_req.cseq, "Session: s"))


def test_linger_over_counts_from_the_first_idle_look() -> None:
    feed = LiveFeed(("quicktime", "u", "v"), {"t": FeedTrack("t")}, owner=None)
    feed.viewers.add("v1")
    assert not feed.linger_over(100.0, 5.0) and feed.idle_since is None
    feed.viewers.clear()
    assert not feed.linger_over(101.0, 5.0) and feed.idle_since == 101.0
    assert not feed.linger_over(105.9, 5.0)
    assert feed.linger_over(106.0, 5.0)
    feed.viewers.add("v2")  # a viewer coming back starts the count again
    assert not feed.linger_over(107.0, 5.0) and feed.idle_since is None
    feed.viewers.clear()
    assert not feed.linger_over(108.0, 5.0) and not feed.linger_over(112.9, 5.0)
    assert feed.linger_over(113.0, 5.0)


def test_reconnection_backs_off_then_the_viewers_are_ended_with_the_reason() -> None:
    splitter = SplitterService(reconnect_timeout=12.0)
    a, oa = _owner(splitter)
    b, _ = _joiner(splitter)
    out = a.closed(oa)
    delays = [c.delay for c in out if isinstance(c, SetTimer) and c.name == "feed-reconnect"]
    for _ in range(10):  # bounded
        a.clock.now += delays[-1]
        out = a.timer("feed-reconnect")
        (conn,) = a.opened_connections(out)
        assert conn.peer == ("192.0.2.7", 554)
        out = a.opened(conn, "Connection refused")
        if a.layer.closed:  # type: ignore[attr-defined]
            break
        delays += [c.delay for c in out if isinstance(c, SetTimer) and c.name == "feed-reconnect"]
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 0.5]  # the last try at the 12 s timeout
    assert a.clock.now - 1_000_000.0 == pytest.approx(12.0)
    (record,) = records(a)
    assert record.reason == "live feed lost: reconnect failed: Connection refused"
    assert CloseConnection(a.client) in out and not splitter.feeds
    out = deliver_posted(b)  # the feed-ended notice
    assert CloseConnection(b.client) in out
    (record,) = records(b)
    assert record.result == "SPLIT"
    assert record.reason == "live feed ended: live feed lost: reconnect failed: Connection refused"


# -- hierarchies: the parent fallback ---------------------------------------------------------


def _child(**settings: Any) -> Playbook:
    pb = Playbook(
        RtspProxyLayer,
        settings=QuickTimeConfig(**settings),
        format_name="quicktime",
        parent="rtsp://127.0.0.1:11091",
    )
    pb.start()
    return pb


@pytest.mark.parametrize(("timed_out", "status"), [(False, 502), (True, 504)])
def test_without_fallback_a_dead_parent_is_a_clean_error_and_the_origin_is_not_tried(
    timed_out: bool, status: int
) -> None:
    pb = _child(parent_fallback=False)
    (parent,) = pb.opened_connections(pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 1)))
    assert parent.peer == ("127.0.0.1", 11091)
    out = pb.opened(parent, "Connection refused", timed_out=timed_out)
    assert not pb.opened_connections(out)
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.status == status
    assert (r.headers.get("X-Mediacache-Error") or "").startswith("parent 127.0.0.1:11091")
    # the connection lives: a retry asks the parent again, never the origin
    (again,) = pb.opened_connections(pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 2)))
    assert again.peer == ("127.0.0.1", 11091)


def test_fallback_to_a_portless_origin_on_another_origin_port_is_tried_once() -> None:
    pb = _child(origin_port=8554)
    (parent,) = pb.opened_connections(pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 1)))
    (direct,) = pb.opened_connections(pb.opened(parent, "Connection refused"))
    assert direct.peer == ("192.0.2.7", 8554)
    out = pb.opened(direct, "Connection refused")
    assert not pb.opened_connections(out)  # not taken for the parent again
    r = parse_one(pb.sent_to_client(out)[0])
    assert r.status == 502
    assert (r.headers.get("X-Mediacache-Error") or "").startswith("origin 192.0.2.7:8554")


def test_fallback_reaches_the_origin_and_serves_the_request() -> None:
    pb = _child(origin_port=8554)
    (parent,) = pb.opened_connections(pb.client_sends(req("DESCRIBE", "rtsp://192.0.2.7/a", 1)))
    (direct,) = pb.opened_connections(pb.opened(parent, "Connection refused"))
    (sent,) = pb.sent_to(direct, pb.opened(direct))
    assert parse_request(sent).uri == "rtsp://192.0.2.7/a"
    out = pb.origin_sends(direct, resp(200, 1, body=VOD))
    assert replies(pb, out) == [(200, 1)]
    assert not [c for c in out if isinstance(c, OpenConnection)]


# -- feed handover: the owner's client leaves, a joiner's session carries the feed ------------


def rtp(seq: int, ts: int, ssrc: int = 0xA1, body: bytes = b"frame") -> bytes:
    return bytes([0x80, 96]) + seq.to_bytes(2, "big") + ts.to_bytes(4, "big") + (
        ssrc.to_bytes(4, "big") + body
    )


def sr(ssrc: int, ts: int) -> bytes:
    """An RTCP sender report (no report blocks) and an SDES with one empty chunk."""
    report = bytes([0x80, 200, 0, 6]) + ssrc.to_bytes(4, "big") + bytes(8) + ts.to_bytes(4, "big")
    return report + bytes(8) + bytes([0x81, 202, 0, 1]) + ssrc.to_bytes(4, "big")


def seq_ts_ssrc(packets: list[bytes]) -> list[tuple[int, int, int]]:
    return [struct.unpack_from(">HII", p, 2) for p in packets]


def _owner_and_joiners(n: int) -> tuple[SplitterService, list[tuple[Playbook, Connection]]]:
    """The owner, then its ``n`` joiners in the order they are asked to take over (the latest
    joiner first)."""
    splitter = SplitterService()
    owner = _owner(splitter)
    joiners = [_joiner(splitter) for _ in range(n)]
    return splitter, [owner, *reversed(joiners)]


@pytest.mark.parametrize("shared", [True, False], ids=["same-stream", "own-numbering"])
def test_the_owner_leaving_hands_the_feed_to_the_latest_joiner(shared: bool) -> None:
    splitter, [(a, oa), (b, ob), (c, oc)] = _owner_and_joiners(2)
    (feed,) = splitter.feeds.values()
    for seq in (7, 8):
        a.origin_sends(oa, build_interleaved(0, rtp(seq, 1000 + seq)))
    a.closed(a.client)
    assert [(r.result, r.reason) for r in records(a)] == [("PASS", "client closed")]
    assert a.layer.background and feed.successor is b.layer  # type: ignore[attr-defined]
    a.origin_sends(oa, build_interleaved(0, rtp(9, 1009)))  # a carries the feed meanwhile
    deliver_posted(c)  # nothing for c: b was asked
    assert "PLAY" not in origin_methods(c, oc)
    if shared:  # the origin's shared live source: b gets the very packets a gets

        def b_stream(i: int) -> bytes:
            return rtp(9 + i, 1009 + i)
    else:  # a session of its own: its own SSRC, sequence and timestamp bases

        def b_stream(i: int) -> bytes:
            return rtp(500 + i, 77 + i, 0xB2)

    deliver_posted(b)
    assert last_request(b, ob).method == "PLAY"
    b.origin_sends(ob, build_interleaved(0, b_stream(0)))  # before its 200: to no viewer
    take_over(b, ob)
    assert feed.owner is b.layer and b.layer.feed_role == "owner"  # type: ignore[attr-defined]
    # detached at once: a's packet goes to no viewer; then the feed-handed-over notice
    out = a.origin_sends(oa, build_interleaved(0, rtp(10, 1010)))
    assert [parse_request(d).method for d in a.sent_to(oa, out)] == ["TEARDOWN"]
    assert CloseConnection(oa) in out and a.layer.closed  # type: ignore[attr-defined]
    (_, background) = records(a)
    assert (background.result, background.reason) == ("PASS", "live feed handed over")
    assert background.bytes_to_client == 0 and background.origin_bytes == 2 * len(rtp(9, 0))
    b.clock.now += 0.1  # 100 ms between the switch and b's first packet
    for i in range(3):
        b.origin_sends(ob, build_interleaved(0, b_stream(i)))
    b.origin_sends(ob, build_interleaved(1, sr(0xA1 if shared else 0xB2, 77)))
    got = c.dataplane.sinks[0].payloads
    sent = [7, 8, 9, 10, 11] if shared else [7, 8, 9, 10, 11, 12]  # b's 9: a sent it already
    assert [s for s, _, _ in seq_ts_ssrc(got)] == sent  # contiguous, none twice
    assert {x for _, _, x in seq_ts_ssrc(got)} == {0xA1}
    rtcp = c.dataplane.sinks[1].payloads
    fan = feed.tracks["stream=0"]
    if shared:  # b's packets are the stream the viewers had: not rewritten, and then sent
        assert got[3:] == [rtp(10, 1010), rtp(11, 1011)]  # straight to the fan-out
        assert b.layer.channel_sinks[0] is fan.rtp  # type: ignore[attr-defined]
        assert rtcp == [sr(0xA1, 77)]
    else:  # rewritten once in the feed path: seq 10.., ts 1009 + 0.1 s x 90 kHz ..
        assert [t for _, t, _ in seq_ts_ssrc(got)][3:] == [10009, 10010, 10011]
        assert got[3][12:] == b"frame"
        assert rtcp == [sr(0xA1, 10009)]  # its SSRC and RTP timestamp alike
    assert b.dataplane.sinks[0].payloads == got  # the successor's own viewer alike
    c.closed(c.client)
    b.closed(b.client)
    assert [r.result for r in records(b) + records(c)] == ["SPLIT", "SPLIT"]
    assert records(b)[0].origin_bytes > 0  # its session's bytes from the take-over


def test_a_refused_take_over_asks_the_next_joiner() -> None:
    splitter, [(a, oa), (b, ob), (c, oc)] = _owner_and_joiners(2)
    (feed,) = splitter.feeds.values()
    a.closed(a.client)
    take_over(b, ob, status=453)
    assert feed.owner is a.layer and b.layer.feed_role == "joiner"  # type: ignore[attr-defined]
    take_over(c, oc)
    assert feed.owner is c.layer  # type: ignore[attr-defined]
    assert [parse_request(d).method for d in a.sent_to(oa, deliver_posted(a))] == ["TEARDOWN"]
    c.origin_sends(oc, build_interleaved(0, RTP))
    assert b.dataplane.sinks[0].payloads == [RTP]  # b still watches, fed by c's session


def test_a_successor_leaving_before_its_play_is_answered_hands_on_to_the_next() -> None:
    splitter, [(a, _oa), (b, ob), (c, oc)] = _owner_and_joiners(2)
    (feed,) = splitter.feeds.values()
    a.closed(a.client)
    deliver_posted(b)
    assert last_request(b, ob).method == "PLAY"
    b.closed(b.client)
    take_over(c, oc)
    assert feed.owner is c.layer and not a.layer.closed  # type: ignore[attr-defined]
    deliver_posted(a)
    assert a.layer.closed  # type: ignore[attr-defined]


def test_with_no_joiner_able_to_take_over_the_owner_carries_the_feed_as_before() -> None:
    splitter, [(a, oa), (b, ob)] = _owner_and_joiners(1)
    (feed,) = splitter.feeds.values()
    a.client_sends(req("TEARDOWN", URL, 4, f"Session: {a.layer.session_id}"))  # type: ignore[attr-defined]
    take_over(b, ob, status=503)
    assert feed.owner is a.layer and feed.successor is None and not a.layer.closed  # type: ignore[attr-defined]
    a.origin_sends(oa, build_interleaved(0, RTP))
    assert b.dataplane.sinks[0].payloads == [RTP]
    assert "TEARDOWN" not in origin_methods(a, oa)
    b.closed(b.client)  # the last viewer: the feed lingers, then a's session ends it
    a.timer("feed-linger")
    a.clock.now += 5.0
    out = a.timer("feed-linger")
    assert [parse_request(d).method for d in a.sent_to(oa, out)] == ["TEARDOWN"]
    assert feed.ended and [r.reason for r in records(a)] == [
        "client closed",
        "live feed released (no viewers)",
    ]


def test_continuity_rewrites_a_successor_with_its_own_numbering() -> None:
    """Seq, timestamp and SSRC continue what the viewers had; the payload is left alone. (Its
    cost per packet is measured by benchmarks/handover_continuity.py.)"""
    from mediacache.splitter import Continuity, FanOut

    track = FeedTrack("t", FanOut(), FanOut())
    track.rtp.send(rtp(7, 1000))
    cont = Continuity(track, 90000, 0.0, lambda: 0.0, lambda rtp, rtcp: None)
    packet = rtp(500, 5, 0xB2, bytes(1200))
    cont.rtp.send(packet)
    cont.rtp.send(rtp(501, 3005, 0xB2, bytes(1200)))
    assert cont.mode == "rewrite"
    assert seq_ts_ssrc([track.rtp.last]) == [(9, 4000, 0xA1)]
    assert track.rtp.last[12:] == bytes(1200)


def test_a_teardown_during_the_take_over_is_an_owners_and_hands_on() -> None:
    """The successor's client TEARDOWNs while its take-over PLAY is at the origin: the
    TEARDOWN waits for the PLAY's answer, is then an owner's, and the feed goes on to the next
    joiner (it used to be forwarded as a joiner's and end the feed of every viewer)."""
    splitter, [(a, _oa), (b, ob), (c, oc)] = _owner_and_joiners(2)
    (feed,) = splitter.feeds.values()
    a.closed(a.client)
    deliver_posted(b)
    play_req = last_request(b, ob)
    assert play_req.method == "PLAY"
    b.client_sends(req("TEARDOWN", URL, 4, f"Session: {b.layer.session_id}"))  # type: ignore[attr-defined]
    assert last_request(b, ob) == play_req  # the TEARDOWN waits behind the take-over
    b.origin_sends(ob, resp(200, play_req.cseq, "Session: s"))
    assert feed.owner is b.layer and feed.ended is None  # type: ignore[attr-defined]
    assert feed.successor is c.layer  # b's TEARDOWN was an owner's: handed on
    take_over(c, oc)
    assert feed.owner is c.layer and feed.ended is None  # type: ignore[attr-defined]
    assert [r.reason for r in records(c)] == []  # c watches on


def test_a_joiner_already_leaving_is_passed_over() -> None:
    splitter, [(a, _oa), (b, ob), (c, oc)] = _owner_and_joiners(2)
    (feed,) = splitter.feeds.values()
    b.client_sends(req("TEARDOWN", URL, 4, f"Session: {b.layer.session_id}"))  # type: ignore[attr-defined]
    assert last_request(b, ob).method == "TEARDOWN"  # at the origin, unanswered
    a.closed(a.client)
    deliver_posted(b)  # asked while leaving: declines, the next one is asked
    assert "PLAY" not in origin_methods(b, ob)
    take_over(c, oc)
    assert feed.owner is c.layer  # type: ignore[attr-defined]


class OwnContinuity(RtspDialect):
    """A dialect with its own continuity (as Real's RDT): the sinks it gives are recorded."""

    def __init__(self) -> None:
        self.given: list[tuple[FeedTrack, Any, Any]] = []

    def feed_continuity(self, track: FeedTrack, route: Any) -> tuple[Any, Any] | None:
        sinks = RecordingSink("rtp", track), RecordingSink("rtcp", track)
        self.given.append((track, *sinks))
        return sinks


def test_a_take_over_routes_the_successors_channels_through_the_dialects_continuity() -> None:
    splitter = SplitterService()
    a, _oa = _owner(splitter)
    dialect = OwnContinuity()
    route = Route(format="quicktime", prefix="/a/", origin="rtsp://192.0.2.7/a/")
    pb = Playbook(
        lambda ctx: RtspProxyLayer(ctx, dialect),
        settings=QuickTimeConfig(),
        format_name="quicktime",
        routes=[route],
    )
    pb.start()
    b, ob = viewer(splitter, pb=pb)
    assert replies(b, play(b)) == [(200, 3)] and mode(b) == "SPLIT"
    (feed,) = splitter.feeds.values()
    a.closed(a.client)
    assert dialect.given == []  # asked at the take-over's 200 only
    take_over(b, ob)
    ((track, rtp_sink, rtcp_sink),) = dialect.given
    assert track is feed.tracks["stream=0"] and feed.owner is b.layer  # type: ignore[attr-defined]
    assert b.layer.channel_sinks == {0: rtp_sink, 1: rtcp_sink}  # type: ignore[attr-defined]
    b.origin_sends(ob, build_interleaved(0, RTP))
    b.origin_sends(ob, build_interleaved(1, sr(0xA1, 5)))
    assert rtp_sink.payloads == [RTP] and rtcp_sink.payloads == [sr(0xA1, 5)]
    assert b.dataplane.sinks[0].payloads == []  # nothing bypassed the dialect's sinks
