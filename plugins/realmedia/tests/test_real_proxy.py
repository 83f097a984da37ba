"""The Real proxy (pass-through) judged by ffprobe's packet hashes, against the reference origin.

PEERS.md: ffmpeg 5.1 completes Real's handshake and receives every RDT packet but does not
decode, so packets are compared at packet level (video packet hashes).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import ffprobe_packets, make_clip, missing_peers
from mediacache.testing.proxy import ProxyThread
from mediacache_realmedia.testing import reverse_route

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(bool(missing_peers("ffmpeg")), reason="needs ffprobe"),
]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-root")
    shutil.copy(make_clip(seconds=3, kind="rv20_ac3"), root / "clip.rm")
    return root


@pytest.fixture(scope="module")
def origin(root: Path) -> Iterator[OriginThread]:
    with OriginThread.loopback("realmedia", root) as o:
        yield o


def video(url: str, transport: str) -> list[tuple[str, int, str]]:
    packets = ffprobe_packets(url, 8, extra_args=["-rtsp_transport", transport])
    return [p for p in packets if p[0] == "video"]


@pytest.fixture(scope="module")
def file_video(root: Path) -> list[tuple[str, int, str]]:
    return [p for p in ffprobe_packets(str(root / "clip.rm"), 20) if p[0] == "video"]


def test_udp_through_the_proxy_equals_the_file(origin: OriginThread, file_video: list) -> None:  # type: ignore[type-arg]
    config = reverse_route(origin.port)
    with ProxyThread(config) as p:
        got = video(f"rtsp://127.0.0.1:{p.port('realmedia')}/r/clip.rm", "udp")
        assert len(file_video) > 50 and got == file_video
        rec = p.wait_records(1)[0]
        assert (rec.format, rec.result, rec.transport) == ("realmedia", "MISS", "udp")


def test_tcp_through_the_proxy_equals_the_file(origin: OriginThread, file_video: list) -> None:  # type: ignore[type-arg]
    """The origin's reply to SET_PARAMETER Subscribe and its first data packets come in one
    segment; ffmpeg drops data that arrives before the reply it waits for, so the proxy must
    relay them in that order (it once let the first packet overtake the reply)."""
    config = reverse_route(origin.port)
    with ProxyThread(config) as p:
        got = video(f"rtsp://127.0.0.1:{p.port('realmedia')}/r/clip.rm", "tcp")
    assert len(file_video) > 50 and got == file_video


def test_rtsp_over_http_through_the_proxy_equals_the_file(
    origin: OriginThread,
    file_video: list,  # type: ignore[type-arg]
) -> None:
    """ffmpeg's ``-rtsp_transport http``: Apple's GET/POST tunnel on the Real port."""
    config = reverse_route(origin.port)
    with ProxyThread(config) as p:
        got = video(f"rtsp://127.0.0.1:{p.port('realmedia')}/r/clip.rm", "http")
        assert got == file_video
        assert p.wait_records(1)[0].transport == "tcp"  # interleaved, on the GET connection


def test_forward_mode_with_the_origins_url(origin: OriginThread, root: Path) -> None:
    """A Real player configured with the proxy sends the origin's absolute URLs (ffprobe has
    no proxy setting, so the raw client does): a whole session, the proxy's own challenge."""
    from mediacache_realmedia.testing import RealClient
    from mediacache_realmedia.wire.rmf import parse_rm

    with ProxyThread("") as p, RealClient(p.port("realmedia")) as c:
        c.port = origin.port  # URLs name the origin; the socket goes to the proxy
        c.start("clip.rm")
        got = c.collect(8, until_ends=2)
        assert c.challenge and c.events[0].headers.get("Via", "").endswith("mediacache")
        assert c.request("TEARDOWN", c.url("clip.rm")).status == 200
        records = p.wait_records(1)
    rm = parse_rm((root / "clip.rm").read_bytes())
    assert [p.payload for _, p in got.data] == [p.payload for p in rm.packets]
    assert records[0].url == origin.url("clip.rm")
