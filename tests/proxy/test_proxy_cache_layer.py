"""Playbooks of the RTSP proxy layer's cache path (DESIGN.md "Caching", issue 3): when a fill
becomes servable, revalidation, refusals and keep-alives on a HIT, and the access records of a
background fill. Two tracks, a fake clock, a memory-only store; no sockets."""

from __future__ import annotations

import pytest
from test_proxy_layer import make, parse_one, parse_request, req, resp
from test_replay import rtp

from mediacache.cache.objects import CacheKey
from mediacache.cache.service import CacheService
from mediacache.cache.store import CacheStore
from mediacache.logs import AccessRecord
from mediacache.rtp import Bye, build_bye
from mediacache.rtsp.interleaved import build_interleaved
from mediacache.rtsp.message import Request
from mediacache.rtsp.proxy import FILL_IDLE_LIMIT
from mediacache.sansio.commands import (
    CloseConnection,
    Command,
    EmitRecord,
    SetTimer,
    StartPlayout,
)
from mediacache.sansio.connection import Connection
from mediacache.testing.playbook import Playbook

URL = "rtsp://192.0.2.7/a"
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 192.0.2.7\r\ns=clip\r\nt=0 0\r\na=control:*\r\n"
    b"a=range:npt=0-4.0\r\n"
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    b"a=control:" + URL.encode() + b"/stream=0\r\n"
    b"m=audio 0 RTP/AVP 97\r\na=rtpmap:97 MPEG4-GENERIC/48000/2\r\n"
    b"a=control:" + URL.encode() + b"/stream=1\r\n"
)
KEY = CacheKey.make("quicktime", URL, "stream=0,stream=1")
RTP_INFO = f"RTP-Info: url={URL}/stream=0;seq=100;rtptime=1000,url={URL}/stream=1;seq=500;rtptime=7"
BYE = build_bye(Bye((0x1234,)))


@pytest.fixture
def cache() -> CacheService:
    return CacheService(CacheStore(None, memory_limit=10**7, disk_limit=0))


def client(cache: CacheService, port: int = 40000) -> Playbook:
    """A new client connection of a proxy whose cache is ``cache`` (shared by its clients)."""
    pb = make(client_addr=("127.0.0.1", port))
    pb.ctx.cache = cache
    return pb


def to_origin(pb: Playbook, origin: Connection, out: list[Command]) -> list[Request]:
    return [parse_request(data) for data in pb.sent_to(origin, out)]


def answer(
    pb: Playbook,
    origin: Connection,
    out: list[Command],
    status: int,
    *headers: str,
    body: bytes = b"",
) -> list[Command]:
    """The origin answers the last request the layer sent it in ``out``."""
    sent = to_origin(pb, origin, out)
    assert sent, "nothing was sent to the origin"
    return pb.origin_sends(origin, resp(status, sent[-1].cseq, *headers, body=body))


def describe_setup(
    pb: Playbook, describe: tuple[str, ...] = (), session: str = "s1;timeout=60"
) -> Connection:
    """DESCRIBE (the origin adds ``describe`` headers) and SETUP of both tracks, interleaved."""
    out = pb.client_sends(req("DESCRIBE", URL, 1))
    (origin,) = pb.opened_connections(out)
    out = pb.opened(origin)
    out = answer(pb, origin, out, 200, *describe, f"Content-Base: {URL}/", body=SDP)
    assert parse_one(pb.sent_to_client(out)[0]).status == 200
    for i in range(2):
        ours = [f"Session: {pb.layer.session_id}"] if pb.layer.session_id else []  # type: ignore[attr-defined]
        transport = f"Transport: RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"
        out = pb.client_sends(req("SETUP", f"{URL}/stream={i}", 2 + i, transport, *ours))
        out = answer(pb, origin, out, 200, transport, f"Session: {session}")
        assert parse_one(pb.sent_to_client(out)[0]).status == 200
    return origin


def play(pb: Playbook, cseq: int = 4, *headers: str) -> list[Command]:
    return pb.client_sends(req("PLAY", URL, cseq, f"Session: {pb.layer.session_id}", *headers))  # type: ignore[attr-defined]


def start_miss(pb: Playbook, describe: tuple[str, ...] = ()) -> Connection:
    """A MISS whose PLAY the origin accepted: the fill is open."""
    origin = describe_setup(pb, describe)
    out = play(pb)
    assert [r.method for r in to_origin(pb, origin, out)] == ["PLAY"]
    answer(pb, origin, out, 200, RTP_INFO, "Range: npt=0.000-4.000")
    assert pb.layer.cache_mode == "MISS" and pb.layer.recorder is not None  # type: ignore[attr-defined]
    return origin


def media(pb: Playbook, origin: Connection, *frames: tuple[int, bytes]) -> int:
    """The origin sends ``frames`` (channel, payload), 40 ms apart; their payload bytes."""
    for channel, payload in frames:
        pb.clock.now += 0.04
        pb.origin_sends(origin, build_interleaved(channel, payload))
    return sum(len(payload) for _, payload in frames)


def clip_frames(start: int = 0, count: int = 10) -> list[tuple[int, bytes]]:
    """Packets ``start``.. of both tracks, interleaved (sequence numbers without gaps)."""
    out = []
    for i in range(start, start + count):
        out.append((0, rtp(100 + i, 1000 + 3600 * i, b"v" * 200)))
        out.append((2, rtp(500 + i, 7 + 1920 * i, b"a" * 50, pt=97)))
    return out


def records(pb: Playbook) -> list[AccessRecord]:
    return [c.record for _, out in pb.history for c in out if isinstance(c, EmitRecord)]


def fill_whole(cache: CacheService) -> None:
    """A first client fills the clip completely, then leaves: the object is stored."""
    pb = client(cache, 39000)
    origin = start_miss(pb, ("ETag: v1",))
    media(pb, origin, *clip_frames(), (1, BYE), (3, BYE))
    assert cache.store.contains(KEY)
    pb.closed(pb.client)


# -- when a fill becomes servable -------------------------------------------------------------


def test_a_complete_fill_commits_every_packet(cache: CacheService) -> None:
    pb = client(cache)
    origin = start_miss(pb)
    media(pb, origin, *clip_frames())
    assert not cache.store.contains(KEY) and cache.store.stats().fills == 1  # not before the end
    media(pb, origin, (1, BYE), (3, BYE))
    assert cache.store.contains(KEY) and cache.store.stats().fills == 0
    obj = cache.store.get(KEY)
    assert obj is not None and obj.meta.packet_count == 20
    assert [p.payload for p in obj.iter_from()] == [p for _, p in clip_frames()]
    assert [t.control for t in obj.meta.tracks] == [f"{URL}/stream=0", f"{URL}/stream=1"]


def test_an_rtp_sequence_gap_aborts_the_fill(cache: CacheService) -> None:
    pb = client(cache)
    origin = start_miss(pb)
    frames = clip_frames()
    del frames[6]  # video packet 3 never comes
    media(pb, origin, *frames, (1, BYE), (3, BYE))
    assert pb.layer.recorder is None  # type: ignore[attr-defined]
    assert not cache.store.contains(KEY) and cache.store.stats().fills == 0
    assert cache.store.get(KEY) is None  # nothing servable
    rtp_sink = pb.dataplane.sinks[0]
    assert len(rtp_sink.payloads) == 9  # the client still got what came: a relay now


def test_a_bye_on_one_track_does_not_commit(cache: CacheService) -> None:
    pb = client(cache)
    origin = start_miss(pb)
    media(pb, origin, *clip_frames(count=5), (1, BYE))  # the video ended, the audio goes on
    assert not cache.store.contains(KEY) and cache.store.stats().fills == 1
    media(pb, origin, *[f for f in clip_frames(5, 5) if f[0] == 2])
    assert not cache.store.contains(KEY)
    media(pb, origin, (3, BYE))
    assert cache.store.contains(KEY)


def test_a_silent_origin_trips_the_fill_watchdog(cache: CacheService) -> None:
    pb = client(cache)
    origin = start_miss(pb)
    media(pb, origin, *clip_frames(count=3))
    pb.clock.now += FILL_IDLE_LIMIT - 1
    out = pb.timer("fill-watchdog")  # not silent for long enough yet: armed again
    assert SetTimer("fill-watchdog", FILL_IDLE_LIMIT) in out
    assert cache.store.stats().fills == 1
    pb.clock.now += 2
    pb.timer("fill-watchdog")
    assert pb.layer.recorder is None  # type: ignore[attr-defined]
    assert cache.store.stats().fills == 0 and not cache.store.contains(KEY)
    media(pb, origin, *clip_frames(3, 7), (1, BYE), (3, BYE))  # too late: still nothing
    assert not cache.store.contains(KEY)


# -- the access records of a background fill --------------------------------------------------


@pytest.mark.parametrize("ending", ["complete", "watchdog"])
def test_a_background_fill_logs_every_origin_byte(cache: CacheService, ending: str) -> None:
    """The client leaves past half the clip: its record is written then; the rest of the fill
    comes in one more record (same URL, variant, MISS; no client bytes) when the fill ends."""
    pb = client(cache)
    origin = start_miss(pb)
    pb.clock.now += 2.2  # more than half of the 4 s clip received
    sent = media(pb, origin, *clip_frames(count=6))
    out = pb.closed(pb.client)
    assert pb.layer.background  # type: ignore[attr-defined]
    assert CloseConnection(origin) not in out
    (first,) = records(pb)
    assert (first.result, first.reason, first.origin_bytes) == ("MISS", "client closed", sent)
    assert first.bytes_to_client == sent
    if ending == "complete":
        sent += media(pb, origin, *clip_frames(6, 4), (1, BYE), (3, BYE))
        assert cache.store.contains(KEY)
    else:
        sent += media(pb, origin, *clip_frames(6, 2))
        pb.clock.now += FILL_IDLE_LIMIT + 1
        pb.timer("fill-watchdog")
        assert not cache.store.contains(KEY)
    assert pb.layer.closed  # type: ignore[attr-defined]
    first, background = records(pb)
    assert sum(r.origin_bytes for r in (first, background)) == sent
    assert background.origin_bytes > 0 and background.bytes_to_client == 0
    assert (background.url, background.variant, background.result, background.status) == (
        first.url,
        first.variant,
        "MISS",
        200,
    )
    assert background.reason.startswith(
        "background fill complete" if ending == "complete" else "background fill aborted"
    )
    assert background.start == first.end


# -- revalidation, refusals and keep-alives on a HIT --------------------------------------------


@pytest.mark.parametrize(("etag", "result"), [("v1", "HIT"), ("v2", "MISS")])
def test_a_new_etag_makes_the_stored_object_stale(
    cache: CacheService, etag: str, result: str
) -> None:
    """Same SDP, another ETag on the accounting DESCRIBE: refetched, not served."""
    fill_whole(cache)
    pb = client(cache)
    origin = describe_setup(pb, (f"ETag: {etag}",))
    out = play(pb)
    assert pb.layer.cache_mode == result  # type: ignore[attr-defined]
    to_origin_methods = [r.method for r in to_origin(pb, origin, out)]
    if result == "HIT":
        assert to_origin_methods == [] and pb.of_type(out, StartPlayout)
        assert cache.store.contains(KEY)
        return
    assert to_origin_methods == ["PLAY"]  # the clip comes from the origin again
    assert not cache.store.contains(KEY)  # the stale object was dropped
    answer(pb, origin, out, 200, RTP_INFO, "Range: npt=0.000-4.000")
    media(pb, origin, *clip_frames(), (1, BYE), (3, BYE))
    obj = cache.store.get(KEY)
    assert obj is not None and obj.meta.validators["etag"] == "v2"  # the refetched one
    pb.closed(pb.client)
    assert records(pb)[-1].result == "MISS"


@pytest.mark.parametrize("status", [403, 404])
def test_an_origin_refusal_reaches_the_client_of_a_cached_clip(
    cache: CacheService, status: int
) -> None:
    fill_whole(cache)
    pb = client(cache)
    out = pb.client_sends(req("DESCRIBE", URL, 1))
    (origin,) = pb.opened_connections(out)
    out = pb.opened(origin)
    out = answer(pb, origin, out, status)
    assert parse_one(pb.sent_to_client(out)[0]).status == status
    pb.closed(pb.client)
    (record,) = records(pb)
    assert (record.result, record.status, record.bytes_to_client) == ("PASS", status, 0)
    assert pb.layer.replay is None and not pb.dataplane.sinks  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("public", "method"),
    [("OPTIONS, DESCRIBE, SETUP, PLAY, GET_PARAMETER", "GET_PARAMETER"),
     ("OPTIONS, DESCRIBE, SETUP, PLAY", "OPTIONS")],
    ids=["get_parameter", "options"],
)  # fmt: skip
def test_a_hit_keeps_its_origin_session_alive_without_play(
    cache: CacheService, public: str, method: str
) -> None:
    """The origin times sessions out after 20 s; a HIT held for 90 s sends it a keep-alive
    (GET_PARAMETER when the origin lists it) at least every 10 s, and never PLAY."""
    fill_whole(cache)
    pb = client(cache)
    origin = describe_setup(pb, ("ETag: v1", f"Public: {public}"), session="s2;timeout=20")
    out = play(pb)
    assert pb.layer.cache_mode == "HIT" and pb.of_type(out, StartPlayout)  # type: ignore[attr-defined]
    assert parse_one(pb.sent_to_client(out)[0]).status == 200
    assert to_origin(pb, origin, out) == []
    last_request = pb.clock.now
    sent: list[Request] = []
    for _ in range(9):
        pb.clock.now += 10
        out = pb.timer("origin-keepalive")
        requests = to_origin(pb, origin, out)
        if requests:
            assert pb.clock.now - last_request < 20  # before the origin would expire it
            last_request = pb.clock.now
            sent += requests
            answer(pb, origin, out, 200, "Session: s2;timeout=20")
        assert any(isinstance(c, SetTimer) and c.name == "origin-keepalive" for c in out)
        assert not pb.of_type(out, CloseConnection)
    assert len(sent) >= 4
    assert {r.method for r in sent} == {method}
    assert all(r.headers.get("Session") == "s2" for r in sent)
    assert not pb.layer.closed and pb.layer.origin_state == "open"  # type: ignore[attr-defined]
    every = [d for _, c in pb.history for d in pb.sent_to(origin, c)]
    assert "PLAY" not in {parse_request(d).method for d in every}


def test_a_client_reading_a_fill_is_a_hit_of_the_object(cache: CacheService) -> None:
    first = client(cache, 39000)
    origin = start_miss(first)
    media(first, origin, *clip_frames(count=4))
    joiner = client(cache)
    describe_setup(joiner)
    play(joiner)
    assert joiner.layer.cache_mode == "HIT"  # type: ignore[attr-defined]
    stats = cache.store.stats()
    assert (stats.hits, stats.misses) == (1, 1)  # the filler's miss, the joiner's hit
    media(first, origin, *clip_frames(4, 6), (1, BYE), (3, BYE))
    info = cache.store.info(KEY)
    assert info is not None and info.hits == 1
