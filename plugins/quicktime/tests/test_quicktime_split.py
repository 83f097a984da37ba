"""Live splitting and hierarchies, with the GStreamer RTSP server's shared live mount.

Bytes from the origin are counted on the wire by relays, not taken from the proxy's books.
"""

from __future__ import annotations

import itertools
import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from loguru import logger

from mediacache.logs import AccessRecord
from mediacache.testing.peers import (
    ByteCountingRelay,
    GstRtspOrigin,
    ffmpeg_framemd5,
    make_clip,
    missing_peers,
)
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
    with GstRtspOrigin(vod={"clip.mp4": make_clip(seconds=4)}, live=("live",)) as o:
        yield o


def routes(port: int, extra: str = "") -> str:
    return (
        f"[[routes]]\nformat='quicktime'\nprefix='/'\norigin='rtsp://127.0.0.1:{port}/'\n" + extra
    )


class Viewer:
    """A light live viewer (TCP interleaved) reading in a thread until stopped; with
    ``reading=False`` it stops reading after PLAY (a viewer on a link too slow for the
    stream), with a small receive buffer so the proxy's side fills soon."""

    def __init__(self, port: int, path: str = "/live", *, reading: bool = True) -> None:
        self.client = MiniRtspClient("127.0.0.1", port)
        if not reading:
            self.client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        url = f"rtsp://127.0.0.1:{port}{path}"
        for attempt in range(5):  # GStreamer's shared live mount can answer 503 at first
            if self.client.request("DESCRIBE", url).status == 200:
                break
            time.sleep(0.3 * (attempt + 1))
        t = "RTP/AVP/TCP;unicast;interleaved=0-1"
        self.setup = self.client.request("SETUP", f"{url}/stream=0", [("Transport", t)])
        self.play = self.client.request("PLAY", url)
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        if reading:
            self.thread.start()

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                self.client.read_frames(0.2, until_bye=False)
            except OSError:
                return

    def rtp_seqs(self) -> list[int]:
        return [
            int.from_bytes(f.payload[2:4], "big")
            for f in list(self.client.frames)
            if f.channel == 0
        ]

    def wait_for_packets(self, more_than: int, timeout: float = 8.0) -> int:
        """RTP packets received, once over ``more_than`` or after ``timeout`` s (a loaded
        machine starts GStreamer's live encoder late)."""
        deadline = time.monotonic() + timeout
        while len(self.rtp_seqs()) <= more_than and time.monotonic() < deadline:
            time.sleep(0.1)
        return len(self.rtp_seqs())

    def close(self) -> None:
        self.stop_event.set()
        if self.thread.is_alive():
            self.thread.join(3)
        self.client.close()


def _rate(relay: ByteCountingRelay, seconds: float) -> float:
    start = relay.bytes_down
    time.sleep(seconds)
    return (relay.bytes_down - start) / seconds


def _served_records(p: ProxyThread, n: int, timeout: float = 10) -> list[AccessRecord]:
    """The first ``n`` records of clients (the extra record of an origin session that carried
    a live feed after its client left has no client bytes), waiting at most ``timeout`` s."""
    deadline = time.monotonic() + timeout
    served: list[AccessRecord] = []
    while len(served) < n and time.monotonic() < deadline:
        served = [r for r in p.wait_records(len(served) + 1, 0.5) if r.bytes_to_client > 0]
    return served[:n]


def test_ten_viewers_one_origin_feed(origin: GstRtspOrigin) -> None:
    with ByteCountingRelay(origin.port) as relay, ProxyThread(routes(relay.port)) as p:
        sessions_before = origin.active_sessions()
        viewers = [Viewer(p.port("quicktime"))]
        try:
            time.sleep(1.0)
            one = _rate(relay, 2.0)
            viewers += [Viewer(p.port("quicktime")) for _ in range(9)]
            assert all(v.play.status == 200 for v in viewers)
            assert origin.wait_for(lambda: origin.active_sessions() - sessions_before == 10, 5)
            ten = _rate(relay, 2.0)
            assert one > 10_000  # a live stream flows
            assert ten < one * 1.5  # ten viewers, one stream's worth from the origin
            late = viewers[-1].rtp_seqs()
            assert len(late) > 20
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(late))
        finally:
            for v in viewers:
                v.close()
        records = _served_records(p, 10)
        assert sorted(r.result for r in records) == ["PASS"] + ["SPLIT"] * 9
        assert origin.wait_for(lambda: origin.active_sessions() <= sessions_before, 10)


def test_the_feed_outlives_its_first_viewer(origin: GstRtspOrigin) -> None:
    with ProxyThread(routes(origin.port, "[split]\nlinger = 1.0\n")) as p:
        first = Viewer(p.port("quicktime"))
        time.sleep(0.5)
        second = Viewer(p.port("quicktime"))
        try:
            time.sleep(0.5)
            first.close()
            before = len(second.rtp_seqs())
            assert second.wait_for_packets(before + 20) > before + 20  # fed after the owner left
        finally:
            second.close()
        assert p.wait_idle(10)  # released after the last viewer and the linger


def test_ffmpeg_plays_a_split_stream(origin: GstRtspOrigin) -> None:
    with ProxyThread(routes(origin.port)) as p:
        holder = Viewer(p.port("quicktime"))
        try:
            url = f"rtsp://127.0.0.1:{p.port('quicktime')}/live"
            got = ffmpeg_framemd5(url, transport="udp", timeout=30, extra_args=["-t", "2"])
            assert len([x for x in got if x[0] == 0]) > 20
            assert [r.result for r in p.wait_records(1)] == ["SPLIT"]
        finally:
            holder.close()


def test_on_demand_is_never_split(origin: GstRtspOrigin) -> None:
    with ProxyThread(routes(origin.port, "[cache]\nenabled = false\n")) as p:
        plays = len(origin.requests("PLAY"))
        url = f"rtsp://127.0.0.1:{p.port('quicktime')}/vod/clip.mp4"
        results = []
        threads = [
            threading.Thread(target=lambda: results.append(ffmpeg_framemd5(url, timeout=40)))
            for _ in range(2)
        ]
        for t in threads:
            t.start()
            time.sleep(0.5)
        for t in threads:
            t.join(60)
        assert len(results) == 2 and results[0] == results[1]
        assert len(origin.requests("PLAY")) - plays == 2  # two origin feeds, not one split
        assert [r.result for r in p.wait_records(2)] == ["PASS", "PASS"]


def _feed_viewers(p: ProxyThread) -> list[int]:
    """How many viewers each live feed of a running proxy has (a snapshot on its loop)."""
    server = p.server
    assert server is not None
    splitter = server.splitter
    return p.call(lambda: [len(f.viewers) for f in splitter.feeds.values()] if splitter else [])


def _baseline(origin: GstRtspOrigin) -> float:
    """Bytes per second the origin sends one viewer of the live stream (no proxy)."""
    with ByteCountingRelay(origin.port) as solo:
        direct = Viewer(solo.port)
        try:
            assert direct.wait_for_packets(10) > 10
            return _rate(solo, 1.5)
        finally:
            direct.close()


def test_hierarchy_parent_splits_to_children(origin: GstRtspOrigin) -> None:
    """One parent, two children, two viewers each: the parent pulls one feed from the
    origin and sends one to each child; the origin still sees all four viewers."""
    with ByteCountingRelay(origin.port) as to_origin:
        parent = ProxyThread("")  # forward proxy: children send it absolute origin URLs
        with parent:
            relays = [ByteCountingRelay(parent.port("quicktime")) for _ in range(2)]
            for r in relays:
                r.start()
            children = [
                ProxyThread(
                    routes(to_origin.port, f"[parents]\nquicktime = 'rtsp://127.0.0.1:{r.port}'\n")
                )
                for r in relays
            ]
            for c in children:
                c.__enter__()
            viewers: list[Viewer] = []
            try:
                sessions_before = origin.active_sessions()
                viewers = [Viewer(c.port("quicktime")) for c in children for _ in range(2)]
                assert all(v.play.status == 200 for v in viewers)
                assert origin.wait_for(lambda: origin.active_sessions() - sessions_before == 4, 5)
                time.sleep(1.0)
                rates = [_rate(r, 2.0) for r in [to_origin, *relays]]
                # the parent's one feed serves both children's feeds: one owner, one joiner
                assert _feed_viewers(parent) == [2]
                assert all(v.wait_for_packets(20) > 20 for v in viewers)
                # and real players: ffmpeg on each child decodes the split stream
                urls = [f"rtsp://127.0.0.1:{c.port('quicktime')}/live" for c in children]
                with ThreadPoolExecutor(2) as pool:
                    got = list(
                        pool.map(
                            lambda u: ffmpeg_framemd5(
                                u, transport="udp", timeout=30, extra_args=["-t", "2"]
                            ),
                            urls,
                        )
                    )
                assert all(len([x for x in g if x[0] == 0]) > 20 for g in got)
                assert all("SPLIT" in [r.result for r in c.wait_records(1)] for c in children)
            finally:
                for v in viewers:
                    v.close()
                for c in children:
                    c.__exit__(None, None, None)
                for r in relays:
                    r.stop()
            # the parent's sessions: each child's feed (one PASS owner, one SPLIT) and each
            # child's accounting session (no PLAY: no media, unless a child's feed was handed
            # over to it as its viewers left: SPLIT at the parent too)
            # (2 viewers and 1 ffmpeg per child: 6 sessions, more if ffmpeg retried over TCP)
            records = parent.wait_records(6)
            fed = sorted(r.result for r in records if r.bytes_to_client > 0)
            assert len(records) >= 6 and fed[:2] == ["PASS", "SPLIT"], records
            assert set(fed[2:]) <= {"SPLIT"}, records
    one = _baseline(origin)
    assert one > 10_000  # a live stream flows
    assert rates[0] < one * 1.5, (rates, one)  # one stream from the origin, for 4 viewers
    assert all(one * 0.5 < rate < one * 1.5 for rate in rates[1:]), (rates, one)  # one per child


def test_the_feed_reconnects_when_the_origin_comes_back() -> None:
    from mediacache.testing.peers import free_port

    port = free_port()
    first = GstRtspOrigin(vod={}, live=("live",), port=port).start()
    second = None
    try:
        with ProxyThread(routes(port)) as p:
            viewers = [Viewer(p.port("quicktime")) for _ in range(2)]
            try:
                time.sleep(1.0)
                first.stop()
                second = GstRtspOrigin(vod={}, live=("live",), port=port).start()
                time.sleep(3.0)  # backoff 0.5 s, then 1 s
                # both accounting sessions came back; one of them carries the feed
                assert second.wait_for(lambda: second.active_sessions() == 2, 5)
                assert len(second.requests("PLAY")) == 1
                counts = [len(v.rtp_seqs()) for v in viewers]
                assert all(
                    v.wait_for_packets(c + 20) > c + 20
                    for v, c in zip(viewers, counts, strict=True)
                )
            finally:
                for v in viewers:
                    v.close()
    finally:
        first.stop()
        if second is not None:
            second.stop()


def test_viewers_end_cleanly_when_the_origin_does_not_come_back() -> None:
    o = GstRtspOrigin(vod={}, live=("live",)).start()
    try:
        with ProxyThread(routes(o.port, "[split]\nreconnect_timeout = 2.0\n")) as p:
            viewers = [Viewer(p.port("quicktime")) for _ in range(2)]
            time.sleep(1.0)
            o.stop()
            assert p.wait_idle(10)  # every session ended, none stuck
            reasons = {r.reason for r in p.wait_records(2)}
            assert any("live feed" in r for r in reasons)
            for v in viewers:
                v.close()
    finally:
        o.stop()


def test_a_child_goes_direct_when_its_parent_is_down(origin: GstRtspOrigin) -> None:
    from mediacache.testing.peers import free_port

    dead = free_port()
    with ProxyThread(
        routes(origin.port, f"[parents]\nquicktime = 'rtsp://127.0.0.1:{dead}'\n")
    ) as p:
        v = Viewer(p.port("quicktime"))
        try:
            assert v.play.status == 200
            assert v.wait_for_packets(10) > 10
        finally:
            v.close()


def _small_send_buffer(p: ProxyThread, viewer: Viewer) -> None:
    """Give the proxy's socket to ``viewer`` a small fixed send buffer. The kernel grows a
    loopback socket's send buffer to 4 MB (80 s of this stream) before the proxy's own queue
    would grow; a small one, like a congested link's, fills within a second or two."""
    server = p.server
    assert server is not None
    here = viewer.client.sock.getsockname()[:2]

    def shrink() -> bool:
        for driver in server.services["quicktime"].sessions:
            if driver.client.peer == here:
                sock = driver.transports[driver.client].get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
                return True
        return False

    assert p.call(shrink)


def test_a_tcp_viewer_that_stops_reading_never_stalls_the_others(origin: GstRtspOrigin) -> None:
    """Its queue (the proxy's send buffer) passes ``tcp_send_limit``: its packets are dropped,
    the other viewers get every packet, and after ``tcp_hopeless_after`` over the limit it is
    disconnected with a WARNING."""
    lines: list[str] = []
    handler = logger.add(lines.append, format="{level} {message}", level="WARNING")
    limits = "[formats.quicktime]\ntcp_send_limit = 16384\ntcp_hopeless_after = 1.0\n"
    try:
        with ProxyThread(routes(origin.port, limits)) as p:
            viewers = [Viewer(p.port("quicktime")) for _ in range(2)]  # the owner and a joiner
            slow: Viewer | None = None
            try:
                assert all(v.wait_for_packets(20) > 20 for v in viewers)
                slow = Viewer(p.port("quicktime"), reading=False)
                assert slow.play.status == 200
                slow_port = slow.client.sock.getsockname()[1]
                _small_send_buffer(p, slow)
                stalled = time.monotonic()
                counts = [len(v.rtp_seqs()) for v in viewers]
                record = p.wait_record(lambda r: r.client == f"127.0.0.1:{slow_port}", 15)
                gone_after = time.monotonic() - stalled
                assert record is not None and record.result == "SPLIT"
                assert gone_after >= 1.0  # not before tcp_hopeless_after
                after = [v.wait_for_packets(c + 25) for v, c in zip(viewers, counts, strict=True)]
                assert all(a > c + 25 for a, c in zip(after, counts, strict=True))  # fed on
                for v in viewers:
                    seqs = v.rtp_seqs()
                    assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), "gap"
            finally:
                for v in [*viewers, *([slow] if slow else [])]:
                    v.close()
    finally:
        logger.remove(handler)
    behind = [line for line in lines if "hopelessly behind" in line]
    assert len(behind) == 1 and behind[0].startswith("WARNING")
    assert f"('127.0.0.1', {slow_port})" in behind[0]
    dropped = re.search(r"\((\d+) packets dropped\)", behind[0])
    assert dropped is not None and int(dropped.group(1)) >= 10  # dropped for a second first


def test_a_child_without_fallback_refuses_when_its_parent_is_down(origin: GstRtspOrigin) -> None:
    from mediacache.testing.peers import free_port

    dead = free_port()
    extra = (
        f"[parents]\nquicktime = 'rtsp://127.0.0.1:{dead}'\n"
        "[formats.quicktime]\nparent_fallback = false\n"
    )
    with ByteCountingRelay(origin.port) as to_origin:
        with ProxyThread(routes(to_origin.port, extra)) as p:
            url = f"rtsp://127.0.0.1:{p.port('quicktime')}/live"
            with MiniRtspClient("127.0.0.1", p.port("quicktime")) as client:
                first = client.request("DESCRIBE", url)
                again = client.request("DESCRIBE", url)  # the connection lives; same answer
            for r in (first, again):
                why = r.headers.get("X-Mediacache-Error") or ""
                assert r.status == 502 and why.startswith(f"parent 127.0.0.1:{dead}"), why
            time.sleep(0.3)
        assert to_origin.connections == []  # never the origin directly


def test_the_owner_leaving_hands_the_feed_to_a_joiner(origin: GstRtspOrigin) -> None:
    """The first viewer (the feed's owner) leaves: a joiner's own origin session takes the
    feed over (PLAY), the owner's is torn down, so the origin counts the viewers that are
    there; the others watch on without a gap, and the origin still sends one stream."""
    with ByteCountingRelay(origin.port) as relay, ProxyThread(routes(relay.port)) as p:
        sessions_before = origin.active_sessions()
        plays_before = len(origin.requests("PLAY"))
        viewers = [Viewer(p.port("quicktime")) for _ in range(3)]
        try:
            assert all(v.play.status == 200 for v in viewers)
            assert origin.wait_for(lambda: origin.active_sessions() - sessions_before == 3, 5)
            assert all(v.wait_for_packets(20) > 20 for v in viewers)
            before = _rate(relay, 1.5)
            viewers[0].close()
            assert origin.wait_for(lambda: origin.active_sessions() - sessions_before == 2, 2.5)
            assert len(origin.requests("PLAY")) - plays_before == 2  # the owner's, the successor's
            counts = [len(v.rtp_seqs()) for v in viewers[1:]]
            after = _rate(relay, 1.5)
            for v, c in zip(viewers[1:], counts, strict=True):
                assert v.wait_for_packets(c + 20) > c + 20  # fed on
                seqs = v.rtp_seqs()
                assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs)), "gap"
            assert before > 10_000  # a live stream flows
            assert before * 0.5 < after < before * 1.5, (before, after)  # one stream, not two
        finally:
            for v in viewers:
                v.close()
        served = _served_records(p, 3)
        assert sorted(r.result for r in served) == ["PASS", "SPLIT", "SPLIT"]
