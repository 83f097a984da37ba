"""The MMS proxy's cache, accounting and Intelligent Streaming variants, with real sockets.

A relay that counts bytes sits between the proxy and the origin (as in the QuickTime cache
tests), so "no media from the origin" is measured on the wire. Players are ffmpeg (the judge of
what a real player decodes) and the scripted MmsClient (which shows LocationIds and payloads).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from wmt_origin_env import by_stream, clip, file_packets, have
from wmt_proxy_env import (
    ByteCountingRelay,
    cached_keys,
    expected,
    fills,
    in_threads,
    origin_thread,
    play_clip,
    player,
    proxy_url,
    routed,
)

from mediacache.testing import peers
from mediacache.testing.origin import OriginThread
from mediacache.testing.proxy import ProxyThread
from mediacache_wmt.testing import connected
from mediacache_wmt.wire import mms

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")]

CLIP_BYTES = 150_000  # clip.wmv: 54 ASF packets of 3200 bytes; its header is 809 bytes
CONTROL_BYTES = 5_000  # an accounting session: replies and the header, no data packets


@pytest.fixture
def origin() -> Iterator[OriginThread]:
    with origin_thread() as o:
        yield o
        assert o.wait_idle(), "an origin session outlived its proxy session"


@pytest.fixture
def relay(origin: OriginThread) -> Iterator[ByteCountingRelay]:
    with ByteCountingRelay(origin.port) as r:
        yield r


def test_a_hit_plays_the_file_and_costs_no_origin_media(origin, relay) -> None:
    want = by_stream(peers.ffmpeg_framemd5_file(clip("clip.wmv")))
    with ProxyThread(routed(relay.port)) as p:
        assert by_stream(peers.ffmpeg_framemd5(proxy_url(p, "clip.wmv"))) == want
        miss_bytes = relay.bytes_down
        assert miss_bytes > CLIP_BYTES
        assert by_stream(peers.ffmpeg_framemd5(proxy_url(p, "clip.wmv"))) == want
        assert relay.bytes_down - miss_bytes < CONTROL_BYTES
        records = p.wait_records(2)
        assert [r.result for r in records] == ["MISS", "HIT"]
        assert records[0].origin_bytes > CLIP_BYTES and records[1].origin_bytes == 0
        assert records[1].bytes_to_client > CLIP_BYTES
        assert records[0].variant == records[1].variant == "1,2"
        assert cached_keys(p) == [f"mms://127.0.0.1:{relay.port}/clip.wmv [1,2]"]
    # the origin saw both viewers, each session closed when its player left
    assert [r.reason for r in origin.wait_records(2)] == ["closed by the player"] * 2
    assert len(relay.connections) == 2


def test_n_players_n_origin_connections_one_fill(origin, relay) -> None:
    packets = expected("clip.wmv")
    with ProxyThread(routed(relay.port)) as p:
        plays = in_threads(*[lambda: play_clip(p, "clip.wmv")] * 3, stagger=0.4)
        for _, got in plays:
            assert [x.payload for x in got.packets] == packets
            assert got.end is not None and got.end.hr == 0
        results = sorted(r.result for r in p.wait_records(3))
        assert results == ["HIT", "HIT", "MISS"]  # two joined the fill in progress
        assert cached_keys(p) == [f"mms://127.0.0.1:{relay.port}/clip.wmv [1,2]"]
        assert fills(p) == 0
    assert len(relay.connections) == 3  # one accounting connection per player
    assert CLIP_BYTES < relay.bytes_down < CLIP_BYTES * 1.5  # one origin feed, not three
    assert len(origin.wait_records(3)) == 3


def test_a_hit_over_mmsu_delivers_the_same_packets(origin) -> None:
    with ProxyThread(routed(origin.port)) as p:
        header, got = play_clip(p, "clip.wmv")
        assert header == file_packets(clip("clip.wmv"))[0].raw
        header, got = play_clip(p, "clip.wmv", udp=True)
        assert header == file_packets(clip("clip.wmv"))[0].raw
        assert [x.payload for x in got.packets] == expected("clip.wmv")
        assert {x.packet_id for x in got.packets} == {5}  # the player's own packet id
        assert [r.result for r in p.wait_records(2)] == ["MISS", "HIT"]


def test_each_stream_selection_is_its_own_cache_object(origin, relay) -> None:
    with ProxyThread(routed(relay.port)) as p:
        _, got = play_clip(p, "multi.wmv", select={2, 4})
        assert [x.payload for x in got.packets] == expected("multi.wmv", {2, 4})
        assert cached_keys(p) == [f"mms://127.0.0.1:{relay.port}/multi.wmv [2,4]"]
        before = relay.bytes_down
        _, got = play_clip(p, "multi.wmv", select={3, 4})  # another variant: a miss
        assert [x.payload for x in got.packets] == expected("multi.wmv", {3, 4})
        assert relay.bytes_down - before > 100_000
        before = relay.bytes_down
        _, got = play_clip(p, "multi.wmv", select={2, 4})  # the first one again: a hit
        assert [x.payload for x in got.packets] == expected("multi.wmv", {2, 4})
        assert relay.bytes_down - before < CONTROL_BYTES
        assert [r.result for r in p.wait_records(3)] == ["MISS", "MISS", "HIT"]
        assert [r.variant for r in p.records()] == ["2,4", "3,4", "2,4"]
        assert cached_keys(p) == [
            f"mms://127.0.0.1:{relay.port}/multi.wmv [2,4]",
            f"mms://127.0.0.1:{relay.port}/multi.wmv [3,4]",
        ]
        # a selection caches only its streams: the data packets it was sent, nothing else
        sizes = p.call(lambda: {i.key.variant: i.size for i in p.cache.store.list()})
        for variant, streams in (("2,4", {2, 4}), ("3,4", {3, 4})):
            stored = expected("multi.wmv", streams)
            assert sizes[variant] == sum(len(x) + mms.DATA_PACKET_HEADER_SIZE for x in stored)


def test_a_seek_into_a_hit_starts_where_the_origin_would(origin) -> None:
    with ProxyThread(routed(origin.port)) as p:
        play_clip(p, "clip.wmv")  # fill
        _, from_cache = play_clip(p, "clip.wmv", position=2.0)
        assert p.wait_records(2)[1].result == "HIT"
    with connected(origin) as c:
        c.handshake("clip.wmv")
        c.read_header()
        direct = c.play(position=2.0)
    assert [x.sequence for x in from_cache.packets] == [x.sequence for x in direct.packets]
    assert 0 < len(from_cache.packets) < len(expected("clip.wmv"))


def test_a_player_leaving_early_leaves_nothing_servable(origin) -> None:
    with ProxyThread(routed(origin.port)) as p:
        with player(p) as c:
            c.handshake("w/clip.wmv")
            c.read_header()
            c.start()
            time.sleep(0.5)  # a sixth of the clip: below the background-fill threshold
        assert p.wait_idle()
        assert cached_keys(p) == [] and fills(p) == 0
        assert p.wait_records(1)[0].result == "MISS"
        _, got = play_clip(p, "clip.wmv")  # and the next player is a miss that completes
        assert [x.payload for x in got.packets] == expected("clip.wmv")
        assert [r.result for r in p.wait_records(2)] == ["MISS", "MISS"]
        assert len(cached_keys(p)) == 1


def test_a_paused_miss_is_not_cached(origin) -> None:
    with ProxyThread(routed(origin.port)) as p, player(p) as c:
        c.handshake("w/clip.wmv")
        c.read_header()
        c.start()
        time.sleep(0.5)
        c.send(mms.StopPlaying())
        while not isinstance(c.recv(), mms.ReportEndOfStream):
            pass  # data packets already on their way
        got = c.play(location_id=20)
        assert got.packets and got.packets[0].sequence >= 20
        assert cached_keys(p) == [] and fills(p) == 0


def test_cache_disabled_relays_every_play(origin, relay) -> None:
    with ProxyThread(routed(relay.port, "[cache]\nenabled = false\n")) as p:
        for _ in range(2):
            _, got = play_clip(p, "clip.wmv")
            assert [x.payload for x in got.packets] == expected("clip.wmv")
        assert [r.result for r in p.wait_records(2)] == ["PASS", "PASS"]
    assert relay.bytes_down > 2 * CLIP_BYTES


def test_a_fill_past_half_goes_on_after_its_player_left(origin) -> None:
    with ProxyThread(routed(origin.port)) as p:
        with player(p) as c:
            c.handshake("w/clip.wmv")
            c.read_header()
            c.start()
            c.collect(5, seconds=2.0)  # two thirds of the clip
        assert p.wait_records(1)[0].result == "MISS"  # written when the player left
        deadline = time.monotonic() + 5
        while not cached_keys(p) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(cached_keys(p)) == 1  # the rest came in the background
        assert p.wait_idle()  # and the background session ended with the fill
        player_record, background = p.wait_records(2)
        assert (background.result, background.reason) == ("MISS", "background fill complete")
        assert (background.url, background.bytes_to_client) == (player_record.url, 0)
        size = p.call(lambda: p.cache.store.list()[0].size)
        assert player_record.origin_bytes < size  # the player left before the end
        assert player_record.origin_bytes + background.origin_bytes >= size  # all logged
        _, got = play_clip(p, "clip.wmv")
        assert [x.payload for x in got.packets] == expected("clip.wmv")
        assert p.wait_records(3)[2].result == "HIT"


def test_a_child_goes_through_its_parent_and_the_origin_sees_every_viewer(origin) -> None:
    with ProxyThread() as parent:
        config = routed(origin.port, f"[parents]\nwmt = 'mms://127.0.0.1:{parent.port('wmt')}'\n")
        with ProxyThread(config) as child:
            for _ in range(2):
                _, got = play_clip(child, "clip.wmv")
                assert [x.payload for x in got.packets] == expected("clip.wmv")
            assert [r.result for r in child.wait_records(2)] == ["MISS", "HIT"]
        # the parent was asked for the origin's URL (forward mode) by both sessions
        assert [r.url for r in parent.wait_records(2)] == [
            f"mms://127.0.0.1:{origin.port}/clip.wmv"] * 2
    assert len(origin.wait_records(2)) == 2


def test_a_hit_pauses_and_resumes_where_the_player_asks(origin) -> None:
    packets = expected("clip.wmv")
    with ProxyThread(routed(origin.port)) as p:
        play_clip(p, "clip.wmv")
        with player(p) as c:
            c.handshake("w/clip.wmv")
            c.read_header()
            c.start()
            first = c.collect(5, seconds=1.0).packets
            c.send(mms.StopPlaying())
            while not isinstance(event := c.recv(), mms.ReportEndOfStream):
                if isinstance(event, mms.MmsDataPacket):
                    first.append(event)
            rest = c.play(packet_id=6, location_id=first[-1].sequence + 1)
        assert 0 < len(first) < len(packets)
        assert [x.payload for x in first + rest.packets] == packets
        assert {x.packet_id for x in rest.packets} == {6}
        assert p.wait_records(2)[1].result == "HIT"


def test_a_restart_keeps_the_objects(origin, relay, tmp_path) -> None:
    with ProxyThread(routed(relay.port), cache_dir=tmp_path) as p:
        play_clip(p, "clip.wmv")
    filled = relay.bytes_down
    with ProxyThread(routed(relay.port), cache_dir=tmp_path) as p:
        _, got = play_clip(p, "clip.wmv", udp=True)
        assert [x.payload for x in got.packets] == expected("clip.wmv")
        assert p.wait_records(1)[0].result == "HIT"
    assert relay.bytes_down - filled < CONTROL_BYTES


def test_the_origins_session_limit_holds_for_hits_too() -> None:
    with origin_thread(max_sessions=1) as o, ProxyThread(routed(o.port)) as p:
        play_clip(p, "clip.wmv")  # cached now
        assert o.wait_idle()
        with player(p) as holder:
            holder.handshake("w/clip.wmv")  # a hit to be: it holds the origin's one session
            with player(p) as second:
                second.connect()
                second.request(mms.FunnelInfo(), mms.ReportFunnelInfo)
                second.funnel()
                refused = second.open("w/clip.wmv")
                assert isinstance(refused, mms.ReportOpenFile)
                assert refused.hr == mms.HResult.TOO_MANY_SESSIONS  # the origin's own answer
                assert second.closed()
            holder.read_header()
            assert len(holder.play().packets) == len(expected("clip.wmv"))
        assert [r.result for r in p.wait_records(3)] == ["MISS", "PASS", "HIT"]
        assert p.wait_records(3)[1].status == 453
