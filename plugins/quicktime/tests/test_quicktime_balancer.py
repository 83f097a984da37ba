"""Two proxy nodes with one configuration behind HAProxy (DESIGN.md, "Deployment": an L4 load
balancer, no special settings, nodes sharing one configuration).

RTSP control goes through the balancer; UDP data leaves each node from its own ports, which its
SETUP reply names, so UDP works through an L4 balancer as well as TCP interleaved.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from mediacache.testing.haproxy import HaproxyBalancer
from mediacache.testing.judge import same_packets
from mediacache.testing.peers import GstRtspOrigin, ffmpeg_framemd5, free_port, make_clip
from mediacache.testing.proxy import ProxyThread
from mediacache.testing.pytest_plugin import requires_peer

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def origin() -> Iterator[GstRtspOrigin]:
    requires_peer("gstreamer", "ffmpeg", "haproxy")
    with GstRtspOrigin(vod={"clip.mp4": make_clip(seconds=3)}) as o:
        yield o


def test_two_nodes_behind_haproxy_serve_every_player(origin: GstRtspOrigin) -> None:
    """The balancer and the nodes use the same port, as in production (players name the
    balancer; a node takes the URL as its own by port). On one machine the nodes differ only by
    their listen address (127.0.0.2, 127.0.0.3); on separate machines the file is the same."""
    port = free_port()
    shared = (
        f"[[routes]]\nformat='quicktime'\nprefix='/'\norigin='rtsp://127.0.0.1:{origin.port}/'\n"
        "[cache]\nenabled = false\n"
    )
    direct = ffmpeg_framemd5(origin.url("vod/clip.mp4"), transport="tcp", timeout=30)
    nodes = [("127.0.0.2", port), ("127.0.0.3", port)]
    with (
        ProxyThread(shared + f"[formats.quicktime]\nlisten = '127.0.0.2:{port}'\n") as a,
        ProxyThread(shared + f"[formats.quicktime]\nlisten = '127.0.0.3:{port}'\n") as b,
        HaproxyBalancer(nodes, listen=("127.0.0.1", port)),
    ):
        url = f"rtsp://127.0.0.1:{port}/vod/clip.mp4"
        with ThreadPoolExecutor(4) as pool:
            transports = ["udp", "tcp", "udp", "tcp"]
            results = list(
                pool.map(lambda t: ffmpeg_framemd5(url, transport=t, timeout=40), transports)
            )
        for got in results:
            assert same_packets(got, direct)
        served = [len(a.wait_records(2)), len(b.wait_records(2))]
    assert served == [2, 2]  # round robin: each node served two of the four players
