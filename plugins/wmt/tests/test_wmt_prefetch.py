"""Prefetching Windows Media clips: the MMS prefetcher fills the cache through a player's MISS
path, and the next player (ffmpeg over mmst, or the scripted one) gets a HIT equal to the file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from wmt_origin_env import by_stream, clip, have
from wmt_proxy_env import cached_keys, expected, fills, origin_thread, play_clip, proxy_url, routed

from mediacache.plugins import load_plugins
from mediacache.server.prefetch import PrefetchResult
from mediacache.testing import peers
from mediacache.testing.origin import OriginThread
from mediacache.testing.proxy import ProxyThread
from mediacache_wmt.plugin import WMT
from mediacache_wmt.prefetch import prefetch_mms
from mediacache_wmt.wire import mms

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")]

CLIP_MEDIA = 100_000  # clip.wmv: 54 ASF packets of 3200 bytes (payloads without padding)


@pytest.fixture
def origin() -> Iterator[OriginThread]:
    with origin_thread() as o:
        yield o
        assert o.wait_idle(), "an origin session outlived its proxy session"


@pytest.fixture
def proxy(origin: OriginThread) -> Iterator[ProxyThread]:
    with ProxyThread(routed(origin.port)) as p:
        yield p


def prefetch(p: ProxyThread, url: str, *, streams: set[int] | None = None) -> PrefetchResult:
    return asyncio.run(prefetch_mms(url, "127.0.0.1", p.port("wmt"), streams=streams))


def test_the_prefetch_hook_answers_for_wmt_only() -> None:
    hook = load_plugins().hook
    fill = hook.mediacache_prefetch(
        format_name=WMT.name, url="mms://h/a", proxy_host="h", proxy_port=1
    )
    assert asyncio.iscoroutine(fill) and fill.cr_code is prefetch_mms.__code__
    fill.close()


def test_prefetch_fills_the_cache_and_ffmpeg_then_hits(origin, proxy) -> None:
    url = proxy_url(proxy, "clip.wmv")
    result = prefetch(proxy, url)
    assert result.ok, result.detail
    assert result.detail == "complete" and result.media_bytes > CLIP_MEDIA
    assert 2.0 < result.seconds < 15  # played at the clip's pace (3 s), to its end
    [record] = proxy.wait_records(1)
    assert (record.result, record.user_agent) == ("MISS", "mediacache-prefetch")
    assert (record.variant, record.url, record.reason) == ("1,2", url, "closed by the player")
    assert cached_keys(proxy) == [f"mms://127.0.0.1:{origin.port}/clip.wmv [1,2]"]
    assert fills(proxy) == 0

    want = by_stream(peers.ffmpeg_framemd5_file(clip("clip.wmv")))
    assert by_stream(peers.ffmpeg_framemd5(url)) == want
    records = proxy.wait_records(2)
    assert records[1].result == "HIT" and records[1].variant == record.variant
    assert records[1].origin_bytes == 0
    assert len(cached_keys(proxy)) == 1


def test_prefetch_of_a_cached_clip_is_a_hit(proxy) -> None:
    url = proxy_url(proxy, "clip.wmv", scheme="mms")
    assert prefetch(proxy, url).ok
    again = prefetch(proxy, url)
    assert again.ok and again.media_bytes > CLIP_MEDIA, again.detail
    assert [r.result for r in proxy.wait_records(2)] == ["MISS", "HIT"]


def test_prefetch_of_one_stream_selection(origin, proxy) -> None:
    """``streams`` fills the variant a player selecting them asks for, and only that one."""
    result = prefetch(proxy, proxy_url(proxy, "multi.wmv"), streams={2, 4})
    assert result.ok, result.detail
    assert cached_keys(proxy) == [f"mms://127.0.0.1:{origin.port}/multi.wmv [2,4]"]
    sizes = proxy.call(lambda: [i.size for i in proxy.cache.store.list()])
    stored = expected("multi.wmv", {2, 4})  # the selection's packets, nothing else
    assert sizes == [sum(len(x) + mms.DATA_PACKET_HEADER_SIZE for x in stored)]
    _, got = play_clip(proxy, "multi.wmv", select={2, 4})
    assert [x.payload for x in got.packets] == expected("multi.wmv", {2, 4})
    records = proxy.wait_records(2)
    assert [r.result for r in records] == ["MISS", "HIT"]
    assert [r.variant for r in records] == ["2,4", "2,4"]


def test_prefetch_of_an_absolute_origin_url(origin, proxy) -> None:
    """Forward mode: the URL names the origin, the proxy's cache key is the same."""
    url = f"mms://127.0.0.1:{origin.port}/clip.wmv"
    result = prefetch(proxy, url)
    assert result.ok, result.detail
    assert cached_keys(proxy) == [f"{url} [1,2]"]
    assert proxy.wait_records(1)[0].result == "MISS"


@pytest.mark.parametrize("path", ["w/missing.wmv", "nowhere/clip.wmv"])
def test_prefetch_failures_are_reported_quickly(proxy, path: str) -> None:
    started = time.monotonic()
    result = prefetch(proxy, f"mmst://127.0.0.1:{proxy.port('wmt')}/{path}")
    assert not result.ok
    assert result.detail == "OpenFile: hr 0xC00D001A (FILE_NOT_FOUND)", result.detail
    assert time.monotonic() - started < 5
    assert cached_keys(proxy) == [] and fills(proxy) == 0
    assert proxy.wait_records(1)[0].status == 404


def test_prefetch_with_the_origin_down_is_reported_quickly() -> None:
    with ProxyThread(routed(peers.free_port())) as p:  # nothing listens there
        started = time.monotonic()
        result = prefetch(p, proxy_url(p, "clip.wmv"))
        assert not result.ok
        assert result.detail == "OpenFile: hr 0xC00D0029 (CONNECTION_LOST)", result.detail
        assert time.monotonic() - started < 5
        assert p.wait_records(1)[0].status == 502


def test_prefetch_of_streams_the_clip_lacks(proxy) -> None:
    result = prefetch(proxy, proxy_url(proxy, "clip.wmv"), streams={9})
    assert not result.ok and result.detail.startswith("streams [9] are not in the clip")
    assert cached_keys(proxy) == []


def test_prefetch_without_a_proxy_and_of_a_non_mms_url() -> None:
    started = time.monotonic()
    result = asyncio.run(prefetch_mms("mms://127.0.0.1:1/w/clip.wmv", "127.0.0.1", 1))
    assert not result.ok and result.detail.startswith("cannot reach the proxy")
    result = asyncio.run(prefetch_mms("rtsp://127.0.0.1:1/w/clip.wmv", "127.0.0.1", 1))
    assert not result.ok and result.detail.startswith("not an MMS URL")
    assert time.monotonic() - started < 5


def test_cli_prefetch(origin, proxy) -> None:
    """``mediacache cache prefetch --format wmt`` goes through the admin API to us."""
    url = proxy_url(proxy, "clip.wmv")
    out = subprocess.run(
        [sys.executable, "-m", "mediacache.cli", "cache", "prefetch", url, "--wait",
         "--format", "wmt", "--admin", proxy.admin_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and result["detail"] == "complete", result
    assert result["media_bytes"] > CLIP_MEDIA
    [record] = proxy.wait_records(1)
    assert (record.result, record.user_agent) == ("MISS", "mediacache-prefetch")
    assert cached_keys(proxy) == [f"mms://127.0.0.1:{origin.port}/clip.wmv [1,2]"]
