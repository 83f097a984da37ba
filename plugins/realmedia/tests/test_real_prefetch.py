"""Prefetching Real clips: the Real prefetcher fills the cache through a viewer's MISS path,
and the next viewer (ffmpeg, a real Real client) gets a HIT equal to the file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mediacache.testing.peers import ffprobe_packets, missing_peers
from mediacache.testing.proxy import ProxyThread
from mediacache_realmedia.prefetch import prefetch_real
from mediacache_realmedia.testing import RealClient
from mediacache_realmedia.wire.rmf import parse_rm

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(bool(missing_peers("ffmpeg")), reason="needs ffmpeg"),
]

HIGH = "stream=0;rule=2,stream=0;rule=3"


def objects(proxy: ProxyThread) -> list[object]:
    return list(proxy.call(lambda: proxy.cache.store.list()))


def test_prefetch_fills_the_cache_and_ffmpeg_then_hits(
    proxy: ProxyThread,
    file_video: list,  # type: ignore[type-arg]
) -> None:
    url = f"rtsp://127.0.0.1:{proxy.port('realmedia')}/r/clip.rm"
    result = asyncio.run(prefetch_real(url, "127.0.0.1", proxy.port("realmedia")))
    assert result.ok, result.detail
    assert result.detail == "complete" and result.media_bytes > 30_000
    assert 2.5 < result.seconds < 15  # played at the clip's pace, to its end
    [record] = proxy.wait_records(1)
    assert (record.result, record.user_agent) == ("MISS", "mediacache-prefetch")
    assert "rule=1" in record.variant
    assert len(objects(proxy)) == 1

    packets = ffprobe_packets(url, 8, extra_args=["-rtsp_transport", "tcp"])
    assert [p for p in packets if p[0] == "video"] == file_video
    records = proxy.wait_records(2)
    assert records[1].result == "HIT" and records[1].variant == record.variant
    assert len(objects(proxy)) == 1


def test_prefetch_of_one_surestream_variant(proxy: ProxyThread, root: Path) -> None:
    """``subscribe`` fills the variant a player of that rate asks for, and only that one."""
    port = proxy.port("realmedia")
    url = f"rtsp://127.0.0.1:{port}/r/sure.rm"
    result = asyncio.run(prefetch_real(url, "127.0.0.1", port, subscribe=HIGH))
    assert result.ok, result.detail
    assert len(objects(proxy)) == 1
    with RealClient(port) as c:
        c.start("r/sure.rm", subscribe=HIGH)
        got = c.collect(10, until_ends=2)
    rm = parse_rm((root / "sure.rm").read_bytes())
    want = [p.payload for p in rm.packets if p.stream == 0 and p.asm_rule in (2, 3)]
    assert [p.payload for _, p in got.data] == want
    records = proxy.wait_records(2)
    assert [r.result for r in records] == ["MISS", "HIT"]
    assert records[0].variant == records[1].variant and "rule=2" in records[0].variant


@pytest.mark.parametrize(
    ("path", "status"),
    [("nowhere/clip.rm", "DESCRIBE: 404 Not Found (no route"), ("r/missing.rm", "DESCRIBE: 404")],
)
def test_prefetch_failures_are_reported_quickly(proxy: ProxyThread, path: str, status: str) -> None:
    port = proxy.port("realmedia")
    started = time.monotonic()
    result = asyncio.run(prefetch_real(f"rtsp://127.0.0.1:{port}/{path}", "127.0.0.1", port))
    assert not result.ok and result.detail.startswith(status), result.detail
    assert time.monotonic() - started < 5
    assert objects(proxy) == []


def test_prefetch_without_a_proxy_and_with_a_bad_subscribe() -> None:
    result = asyncio.run(prefetch_real("rtsp://127.0.0.1:1/r/clip.rm", "127.0.0.1", 1))
    assert not result.ok and result.detail.startswith("cannot reach the proxy")
    result = asyncio.run(
        prefetch_real("rtsp://127.0.0.1:1/r/clip.rm", "127.0.0.1", 1, subscribe="rule=1")
    )
    assert not result.ok and result.detail.startswith("bad subscribe value")


def test_cli_prefetch(proxy: ProxyThread) -> None:
    """``mediacache cache prefetch --format realmedia`` goes through the admin API to us."""
    url = f"rtsp://127.0.0.1:{proxy.port('realmedia')}/r/clip.rm"
    out = subprocess.run(
        [sys.executable, "-m", "mediacache.cli", "cache", "prefetch", url, "--wait",
         "--format", "realmedia", "--admin", proxy.admin_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["ok"] and result["detail"] == "complete" and result["media_bytes"] > 30_000
    [record] = proxy.wait_records(1)
    assert (record.result, record.user_agent) == ("MISS", "mediacache-prefetch")
    assert len(objects(proxy)) == 1
