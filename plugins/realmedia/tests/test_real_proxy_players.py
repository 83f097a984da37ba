"""VLC's realrtsp and GStreamer's rtspreal through the Real proxy, on a MISS and on a HIT.

VLC sends its OPTIONS to the bare server URL and its SETUPs without a scheme; GStreamer and
VLC name no interleaved channel, and route RDT by set id (VLC) or channel (GStreamer): what
the proxy must get right besides what ffmpeg already checks (test_real_proxy.py,
test_real_cache.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import ProcessGroup, make_clip, run_vlc
from mediacache.testing.proxy import ProxyThread
from mediacache.testing.pytest_plugin import requires_peer
from mediacache_realmedia.testing import (
    assert_gstreamer_got_the_clip,
    gstreamer_rdt_sizes,
    reverse_route,
)
from mediacache_realmedia.wire.rmf import parse_rm

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    requires_peer("ffmpeg")
    d = tmp_path_factory.mktemp("root")
    make_clip(d / "clip.rm", 3, kind="rv20_ac3")
    return d


@pytest.fixture
def proxy(root: Path) -> Iterator[ProxyThread]:
    with OriginThread.loopback("realmedia", root) as origin:
        route = reverse_route(origin.port)
        with ProxyThread(route) as p:
            yield p


def test_vlc_plays_through_the_proxy_from_the_origin_and_from_the_cache(
    proxy: ProxyThread, root: Path
) -> None:
    requires_peer("vlc")
    url = f"realrtsp://127.0.0.1:{proxy.port('realmedia')}/r/clip.rm"
    rm = parse_rm((root / "clip.rm").read_bytes())
    audio = sum(len(p.payload) for p in rm.packets if p.stream == 1)
    for _ in ("MISS", "HIT"):
        result = run_vlc(url, seconds=8, extra_args=["-vv"])
        log = result.stderr
        assert "found a real/helix rtsp server" in log
        assert "adding es: video codec = RV20" in log and "adding es: audio codec = a52" in log
        assert "got end of stream packet" in log
        assert result.output_bytes > audio  # all of the audio, in 188-byte TS packets
    assert [r.result for r in proxy.wait_records(2)] == ["MISS", "HIT"]


def test_gstreamer_through_the_proxy_from_the_origin_and_from_the_cache(
    proxy: ProxyThread, root: Path, peer_processes: ProcessGroup
) -> None:
    requires_peer("gstreamer")
    url = f"rtsp://127.0.0.1:{proxy.port('realmedia')}/r/clip.rm"
    rm = parse_rm((root / "clip.rm").read_bytes())
    for _ in ("MISS", "HIT"):
        assert_gstreamer_got_the_clip(gstreamer_rdt_sizes(url, peer_processes), rm)
    assert [r.result for r in proxy.wait_records(2)] == ["MISS", "HIT"]
