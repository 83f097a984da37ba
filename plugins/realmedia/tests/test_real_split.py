"""Splitting a live Real stream: one origin data feed for every viewer, each viewer with its own
accounting session and the set ids its transport needs. Origin bytes are counted on the wire.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import ByteCountingRelay, ffprobe_packets, missing_peers
from mediacache.testing.proxy import ProxyThread
from mediacache_realmedia.testing import RealClient, ffmpeg_rm, reverse_route
from mediacache_realmedia.wire.rmf import parse_rm

pytestmark = [
    pytest.mark.peers,
    pytest.mark.skipif(bool(missing_peers("ffmpeg")), reason="needs ffmpeg"),
]

PATH = "r/live/l.rm"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real-live-root")
    (root / "live").mkdir()
    ffmpeg_rm(root / "live" / "l.rm", "-c:v", "rv10", "-g", "5", "-c:a", "real_144", "-ar",
              "8000", "-ac", "1")  # fmt: skip
    return root


@pytest.fixture
def relay(root: Path) -> Iterator[tuple[OriginThread, ByteCountingRelay]]:
    with OriginThread.loopback("realmedia", root) as origin:
        relay = ByteCountingRelay(origin.port).start()
        try:
            yield origin, relay
        finally:
            relay.stop()


@pytest.fixture
def proxy(relay: tuple[OriginThread, ByteCountingRelay]) -> Iterator[ProxyThread]:
    port = relay[1].port
    config = reverse_route(port) + "[split]\nlinger = 0.0\n"
    with ProxyThread(config) as p:
        yield p


def watch(port: int, seconds: float, *, udp: bool = False, delay: float = 0.0) -> RealClient:
    time.sleep(delay)
    client = RealClient(port)
    client.start(PATH, udp=udp)
    client.collect(seconds)
    return client


def test_viewers_share_one_origin_feed(
    proxy: ProxyThread, relay: tuple[OriginThread, ByteCountingRelay], root: Path
) -> None:
    _, counter = relay
    payloads = {p.payload for p in parse_rm((root / "live" / "l.rm").read_bytes()).packets}
    port = proxy.port("realmedia")
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        jobs = [pool.submit(watch, port, 4.0)]
        jobs += [pool.submit(watch, port, 3.0, udp=i == 2, delay=0.7) for i in range(3)]
        clients = [job.result() for job in jobs]
    try:
        owner = sum(len(p.payload) for _, p in clients[0].received.data)
        assert owner > 20_000
        for i, client in enumerate(clients):
            data = client.received.data
            assert len(data) > 30, f"viewer {i} got {len(data)} packets"
            assert {p.payload for _, p in data} <= payloads  # the clip's packets, unchanged
            if i == 3:  # UDP: the set id is the stream number
                assert {p.set_id for _, p in data} == {0, 1}
            else:  # TCP: the set id is the viewer's channel
                assert all(p.set_id == ch for ch, p in data)
            seqs = [p.seq for _, p in data if p.set_id == 0]
            assert all((b - a) % 0xFF00 == 1 for a, b in itertools.pairwise(seqs))
    finally:
        for client in clients:
            client.close()
    # one stream's worth from the origin (the owner's), not four
    assert counter.bytes_down < 1.3 * owner
    records = proxy.wait_records(4)
    assert sorted(r.result for r in records) == ["PASS", "SPLIT", "SPLIT", "SPLIT"]


def test_ffprobe_joins_a_live_feed(proxy: ProxyThread) -> None:
    """ffmpeg subscribes after its PLAY: the proxy answers the PLAY, and the Subscribe that
    follows makes it a viewer of the running feed (no PLAY at the origin)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        holder = pool.submit(watch, proxy.port("realmedia"), 8.0)
        time.sleep(1.0)
        url = f"rtsp://127.0.0.1:{proxy.port('realmedia')}/{PATH}"
        got = ffprobe_packets(url, 5, extra_args=["-rtsp_transport", "tcp"])
        holder.result().close()
    assert len([p for p in got if p[0] == "video"]) > 10
    records = proxy.wait_records(2)
    assert sorted(r.result for r in records) == ["PASS", "SPLIT"]


def test_after_a_handover_the_viewers_numbering_goes_on(proxy: ProxyThread) -> None:
    """The owner leaves: a joiner's own origin session (numbered from 0, starting at the key
    frame before "now") carries the feed; the viewers see no repeat and no jump back."""
    port = proxy.port("realmedia")
    clients = [RealClient(port) for _ in range(3)]
    try:
        clients[0].start(PATH)
        clients[0].collect(1.0)
        for client in clients[1:]:
            client.start(PATH)
        for client in clients[1:]:
            client.collect(1.0)
        clients[0].close()  # the owner leaves: the latest joiner takes the feed over
        handed = proxy.wait_record(lambda r: r.reason == "live feed handed over")
        assert handed is not None
        for client in clients[1:]:
            client.collect(2.0)
        for i, client in enumerate(clients[1:], 1):
            video = [p for _, p in client.received.data if p.set_id == 0]
            assert len(video) > 20, f"viewer {i} got {len(video)} video packets"
            seqs = [p.seq for p in video]
            jumps = [(a, b) for a, b in itertools.pairwise(seqs) if (b - a) % 0xFF00 != 1]
            assert jumps == [], f"viewer {i}: sequence jumps {jumps[:5]}"
            sent = [(p.timestamp, p.payload) for p in video]
            assert len(set(sent)) == len(sent), f"viewer {i} got a packet twice"
    finally:
        for client in clients:
            client.close()
