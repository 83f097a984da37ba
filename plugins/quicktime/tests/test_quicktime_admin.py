"""Cache management on a running proxy: the admin API and the `mediacache cache` CLI."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import pytest

from mediacache.testing.peers import GstRtspOrigin, make_clip, missing_peers
from mediacache.testing.proxy import ProxyThread
from mediacache.testing.rtspclient import MiniRtspClient

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(
        bool(missing_peers("ffmpeg", "gstreamer")), reason="needs ffmpeg and GStreamer RTSP"
    ),
]


@pytest.fixture(scope="module")
def origin() -> Iterator[GstRtspOrigin]:
    with GstRtspOrigin(vod={"clip.mp4": make_clip(seconds=3, kind="h264_aac")}, live=()) as o:
        yield o


def cli(p: ProxyThread, *args: str) -> object:
    out = subprocess.run(
        [sys.executable, "-m", "mediacache.cli", "cache", *args, "--admin", p.admin_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_prefetch_pin_list_purge(origin: GstRtspOrigin) -> None:
    config = (
        "[[routes]]\nformat='quicktime'\nprefix='/vod/'\n"
        f"origin='rtsp://127.0.0.1:{origin.port}/vod/'\n"
    )
    with ProxyThread(config) as p:
        url = f"rtsp://127.0.0.1:{p.port('quicktime')}/vod/clip.mp4"
        origin_url = f"rtsp://127.0.0.1:{origin.port}/vod/clip.mp4"
        result = cli(p, "prefetch", url, "--wait")
        assert isinstance(result, dict) and result["ok"] and result["media_bytes"] > 30_000
        assert p.wait_records(1)[0].result == "MISS"  # the same path as a viewer's miss
        rows = cli(p, "list", "--json")
        assert isinstance(rows, list) and [r["key"]["url"] for r in rows] == [origin_url]
        assert rows[0]["pinned"] is False and rows[0]["size"] > 30_000
        assert rows[0]["hits"] == 0  # the prefetch itself was the miss
        before = time.time()
        with MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
            c.play_all_tcp(url, seconds=0.3)  # a HIT, left early
        assert p.wait_records(2)[1].result == "HIT"
        [row] = cli(p, "list", "--json")  # type: ignore[misc]
        assert row["hits"] == 1 and before <= row["last_use"] <= time.time()
        table = subprocess.run(
            [sys.executable, "-m", "mediacache.cli", "cache", "list", "--admin", p.admin_url],
            capture_output=True, text=True, timeout=60,
        ).stdout.splitlines()  # fmt: skip
        when = datetime.datetime.fromtimestamp(row["last_use"]).strftime("%Y-%m-%d %H:%M:%S")
        assert table[0].split()[:4] == ["size", "hits", "last", "use"]
        assert table[1].split()[1:4] == ["1", *when.split()]
        assert cli(p, "pin", url) == {"url": url, "objects": 1}
        rows = cli(p, "list", "--json")
        assert rows[0]["pinned"] is True  # type: ignore[index]
        assert cli(p, "unpin", url) == {"url": url, "objects": 1}
        assert cli(p, "purge", url) == {"url": url, "purged": 1}
        assert cli(p, "list", "--json") == []
        cli(p, "prefetch", origin_url, "--wait")  # an origin URL works too (forward mode)
        assert cli(p, "purge", "--all") == {"purged": 1}
        with urllib.request.urlopen(p.admin_url + "/status", timeout=5) as resp:
            status = json.loads(resp.read())
        assert status["formats"]["quicktime"]["port"] == p.port("quicktime")
        with urllib.request.urlopen(p.admin_url + "/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'mediacache_sessions{format="quicktime"}' in metrics
        assert 'mediacache_sessions_total{format="quicktime",result="MISS"} 2' in metrics
        assert 'mediacache_sessions_total{format="quicktime",result="HIT"} 1' in metrics
        assert 'mediacache_origin_bytes_total{format="quicktime",result="MISS"}' in metrics


def test_admin_errors(origin: GstRtspOrigin) -> None:
    with ProxyThread("") as p:
        for path, code in [("/nope", 404), ("/cache/pin", 405)]:
            with pytest.raises(urllib.error.HTTPError) as info:  # type: ignore[attr-defined]
                urllib.request.urlopen(p.admin_url + path, timeout=5)
            assert info.value.code == code
        req = urllib.request.Request(p.admin_url + "/cache/pin", method="POST")
        with pytest.raises(urllib.error.HTTPError) as info:  # type: ignore[attr-defined]
            urllib.request.urlopen(req, timeout=5)
        assert info.value.code == 400
