"""Caching Real clips through the core: RDT recorded on a MISS, replayed on a HIT, SureStream
variants, accounting sessions, and the proxy's own RealChallenge on each side.

Judged with ffprobe's video packet hashes (PEERS.md: ffmpeg receives Real but does not decode)
and with the raw :class:`RealClient`, which shows set ids, rules and stream ends.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import subprocess
from pathlib import Path

import pytest

from mediacache.logs import AccessRecord
from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import ffprobe_packets, missing_peers
from mediacache.testing.proxy import ProxyThread
from mediacache_realmedia.testing import RealClient, reverse_route
from mediacache_realmedia.wire.rmf import parse_rm

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(bool(missing_peers("ffmpeg")), reason="needs ffmpeg"),
]

LOW = "stream=0;rule=0,stream=0;rule=1"
HIGH = "stream=0;rule=2,stream=0;rule=3"


def video(url: str, transport: str) -> list[tuple[str, int, str]]:
    packets = ffprobe_packets(url, 8, extra_args=["-rtsp_transport", transport])
    return [p for p in packets if p[0] == "video"]


def origin_sessions(origin: OriginThread, path: str) -> list[AccessRecord]:
    return [r for r in origin.records() if r.url.endswith(path)]


def test_a_hit_equals_the_file_over_tcp_and_udp(
    proxy: ProxyThread,
    origin: OriginThread,
    file_video: list,  # type: ignore[type-arg]
) -> None:
    """ffmpeg subscribes after its PLAY: the proxy answers that PLAY, decides once the
    Subscribe names the variant, and then plays the origin (MISS) or the cache (HIT)."""
    url = f"rtsp://127.0.0.1:{proxy.port('realmedia')}/r/clip.rm"
    assert video(url, "udp") == file_video
    assert video(url, "tcp") == file_video  # set ids become the TCP client's channels
    assert video(url, "udp") == file_video
    records = proxy.wait_records(3)
    assert [(r.result, r.transport) for r in records] == [
        ("MISS", "udp"), ("HIT", "tcp"), ("HIT", "udp")
    ]  # fmt: skip
    assert records[1].variant == records[0].variant and "rule=1" in records[0].variant
    assert records[1].origin_bytes < 5000  # control only
    # accounting: every viewer had its own origin session; only the first one played
    sessions = [
        r
        for r in origin.wait_records(3)
        if r.url.endswith("/clip.rm") and r.start >= records[0].start - 1
    ]
    assert len(sessions) == 3
    assert sorted(r.bytes_to_client > 100_000 for r in sessions) == [False, False, True]


def test_surestream_each_rate_is_its_own_variant(proxy: ProxyThread, root: Path) -> None:
    """RealClient subscribes before its PLAY (as VLC does): low rate MISS, high rate MISS,
    low again HIT; each gets exactly its rate's packets, with its own set ids and sequence."""
    rm = parse_rm((root / "sure.rm").read_bytes())
    for subscribe in (LOW, HIGH, LOW):
        with RealClient(proxy.port("realmedia")) as c:
            c.start("r/sure.rm", subscribe=subscribe)
            got = c.collect(10, until_ends=2)
            c.request("TEARDOWN", c.url("r/sure.rm"))
        rules = {int(x.split("=")[2]) for x in subscribe.split(",")}
        want = [p for p in rm.packets if p.stream == 0 and p.asm_rule in rules]
        assert [(p.asm_rule, p.payload) for _, p in got.data] == [
            (p.asm_rule, p.payload) for p in want
        ]
        video_seqs = [p.seq for ch, p in got.data if ch == 0]
        assert video_seqs == list(range(len(video_seqs)))
        assert all(p.set_id == ch for ch, p in got.data)
        assert len(got.ends) == 2
    records = proxy.wait_records(3)
    assert [r.result for r in records] == ["MISS", "MISS", "HIT"]
    assert records[0].variant != records[1].variant and records[0].variant == records[2].variant


def test_n_viewers_of_a_cached_clip_make_n_origin_sessions_and_one_fill(
    proxy: ProxyThread, origin: OriginThread, root: Path
) -> None:
    with RealClient(proxy.port("realmedia")) as c:
        c.start("r/clip.rm")
        c.collect(10, until_ends=2)
    packets = len(parse_rm((root / "clip.rm").read_bytes()).packets)

    def view(_: int) -> tuple[int, set[int]]:
        with RealClient(proxy.port("realmedia")) as c:
            c.start("r/clip.rm", udp=True)
            got = c.collect(8, until_ends=2)
            return len(got.data), {p.set_id for _, p in got.data}

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        results = list(pool.map(view, range(3)))
    assert results == [(packets, {0, 1})] * 3  # over UDP the set id is the stream number
    records = proxy.wait_records(4)
    assert [r.result for r in records].count("HIT") == 3
    assert sum(r.result == "MISS" for r in records) == 1
    assert len(proxy.call(lambda: proxy.cache.store.list())) == 1


def test_the_proxy_answers_the_challenge_itself(proxy: ProxyThread, origin: OriginThread) -> None:
    """The client gets the proxy's RealChallenge1, not the origin's; a wrong answer is refused
    by the proxy (400) and never reaches the origin; the right one works (so the proxy
    answered the origin's challenge itself)."""
    before = len(origin.records())
    with RealClient(proxy.port("realmedia")) as c:
        c.options("r/clip.rm")
        assert c.challenge
        c.request("DESCRIBE", c.url("r/clip.rm"))
        c.challenge = "0" * 32  # answer some other challenge
        reply = c.setup("r/clip.rm", 0)
        assert reply.status == 400 and "RealChallenge2" in (
            reply.headers.get("X-Mediacache-Error") or ""
        )
    with RealClient(proxy.port("realmedia")) as c:
        c.start("r/clip.rm")
        assert c.collect(2).data
    records = origin.wait_records(before + 2)
    # the first client's origin connection never got a session (no SETUP reached it)
    assert sum(bool(r.session) for r in records[before:]) == 1


def test_a_cached_clip_behind_origin_auth_still_asks_the_origin(
    root: Path,
    file_video: list,  # type: ignore[type-arg]
) -> None:
    """The origin's 401 reaches the player and its answer the origin; the clip is cached, and
    every later viewer must still pass the origin's check on its accounting connection."""
    with OriginThread.loopback("realmedia", root, auth="viewer:s3cret") as origin:
        route = reverse_route(origin.port)
        with ProxyThread(route) as p:
            base = f"127.0.0.1:{p.port('realmedia')}/r/clip.rm"
            assert video(f"rtsp://viewer:s3cret@{base}", "tcp") == file_video
            assert video(f"rtsp://viewer:s3cret@{base}", "tcp") == file_video
            for wrong in (f"rtsp://viewer:wrong@{base}", f"rtsp://{base}"):
                proc = subprocess.run(
                    ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", wrong],
                    capture_output=True, text=True, timeout=30,
                )  # fmt: skip
                assert proc.returncode != 0 and "401" in proc.stderr
            records = p.wait_records(4)
    assert [r.result for r in records[:2]] == ["MISS", "HIT"]
    assert all(r.status == 401 for r in records[2:])
    assert "s3cret" not in repr(records)


def switch_rate(proxy: ProxyThread, before: str, after: str) -> tuple[list[int], int, RealClient]:
    """A viewer on ``before`` that switches to ``after`` a second in; its video rules in order
    and how many it had at the switch."""
    c = RealClient(proxy.port("realmedia"))
    c.start("r/sure.rm", subscribe=before)
    c.collect(1.0)
    at = len(c.received.data)
    reply = c.request(
        "SET_PARAMETER", c.url("r/sure.rm"), [("Unsubscribe", before), ("Subscribe", after)]
    )
    assert reply.status == 200
    c.collect(10, until_ends=2)
    return [p.asm_rule for _, p in c.received.data], at, c


def test_a_rate_switch_during_a_hit_goes_on_from_the_cached_rate(proxy: ProxyThread) -> None:
    for rate in (LOW, HIGH):  # both rates cached
        with RealClient(proxy.port("realmedia")) as c:
            c.start("r/sure.rm", subscribe=rate)
            c.collect(10, until_ends=2)
    rules, at, c = switch_rate(proxy, LOW, HIGH)
    with c:
        seqs = [p.seq for _, p in c.received.data]
    assert at > 5 and set(rules[:at]) <= {0, 1} and set(rules[at + 2 :]) == {2, 3}
    assert all(b - a == 1 for a, b in itertools.pairwise(seqs))  # one numbering across it
    records = proxy.wait_records(3)
    assert [r.result for r in records] == ["MISS", "MISS", "HIT"]
    assert records[2].origin_bytes < 5000  # both rates came from the cache


def test_a_rate_switch_to_an_uncached_rate_goes_to_the_origin(proxy: ProxyThread) -> None:
    with RealClient(proxy.port("realmedia")) as c:
        c.start("r/sure.rm", subscribe=LOW)
        c.collect(10, until_ends=2)
    rules, at, c = switch_rate(proxy, LOW, HIGH)
    c.close()
    assert at > 5 and set(rules[:at]) <= {0, 1} and {2, 3} <= set(rules[at:])
    records = proxy.wait_records(2)
    assert records[1].result == "HIT" and records[1].origin_bytes > 10_000  # then the origin's
