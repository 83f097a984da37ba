"""Live splitting of MMS broadcasts: one origin data feed for every viewer of a broadcast.

The reference origin serves ``live/clip.wmv`` as a looping broadcast. Bytes from the origin are
counted on the wire by a relay; each viewer still has its own origin session (accounting).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from wmt_origin_env import ffmpeg_rows, have, media_root, vlc_dump, vlc_udp_port_lock
from wmt_proxy_env import ByteCountingRelay, cached_keys, origin_thread, proxy_url, routed

from mediacache.testing import peers
from mediacache.testing.origin import OriginThread, loopback_options
from mediacache.testing.peers import free_port
from mediacache.testing.proxy import ProxyThread
from mediacache_wmt.testing import MmsClient, Received
from mediacache_wmt.wire import mms

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")]


@pytest.fixture
def origin() -> Iterator[OriginThread]:
    with origin_thread() as o:
        yield o
        assert o.wait_idle(15)


class Viewer:
    """A scripted live viewer reading in a thread until closed."""

    def __init__(self, p: ProxyThread, *, udp: bool = False) -> None:
        self.client = MmsClient("127.0.0.1", p.port("wmt"), udp=udp)
        self.client.handshake("w/live/clip.wmv")
        self.header = self.client.read_header()
        self.client.start()
        self.got = Received()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                part = self.client.collect(5, seconds=0.2)
            except (OSError, AssertionError):
                return
            self.got.packets += part.packets
            if part.end is not None:
                self.got.end = part.end
                return

    def locations(self) -> list[int]:
        return [p.sequence for p in list(self.got.packets)]

    def close(self) -> None:
        self.stop.set()
        self.thread.join(3)
        self.client.close()


def _rate(relay: ByteCountingRelay, seconds: float) -> float:
    start = relay.bytes_down
    time.sleep(seconds)
    return (relay.bytes_down - start) / seconds


def test_five_viewers_one_origin_feed(origin) -> None:
    with ByteCountingRelay(origin.port) as relay, ProxyThread(routed(relay.port)) as p:
        viewers = [Viewer(p)]
        try:
            time.sleep(1.0)
            one = _rate(relay, 2.0)
            viewers += [Viewer(p, udp=n % 2 == 1) for n in range(4)]
            time.sleep(0.5)
            five = _rate(relay, 2.0)
            assert one > 20_000  # the broadcast flows (about 400 kbit/s)
            assert five < one * 1.5  # five viewers, one broadcast's worth from the origin
            assert len(relay.connections) == 5  # but an origin session for each
            for v in viewers:
                locations = v.locations()
                assert len(locations) > 20
                assert all(b - a == 1 for a, b in itertools.pairwise(locations)), "a gap"
                assert {x.packet_id for x in v.got.packets} == {5}
        finally:
            for v in viewers:
                v.close()
        records = p.wait_records(5)
        assert sorted(r.result for r in records) == ["PASS"] + ["SPLIT"] * 4
        assert {r.variant for r in records} == {"1,2"}
        assert cached_keys(p) == []  # a broadcast is split, never cached
        assert p.wait_idle(15)  # the feed is released after the last viewer (and the linger)
    assert len(origin.wait_records(5)) == 5


def test_the_feed_outlives_its_first_viewer(origin) -> None:
    with ProxyThread(routed(origin.port, "[split]\nlinger = 1.0\n")) as p:
        first = Viewer(p)
        time.sleep(0.5)
        second = Viewer(p)
        try:
            time.sleep(0.5)
            first.client.send(mms.CloseFile())  # as ffmpeg and VLC leave
            first.close()
            before = len(second.locations())
            time.sleep(1.5)
            assert len(second.locations()) > before + 10  # still fed after the owner left
            assert p.wait_records(1)[0].result == "PASS"  # the owner's record, written now
        finally:
            second.close()
        assert p.wait_idle(10)


def test_ffmpeg_plays_a_split_broadcast(origin) -> None:
    with ProxyThread(routed(origin.port)) as p, peers.ProcessGroup() as group:
        holder = Viewer(p)
        try:
            time.sleep(0.5)
            code, rows, err = ffmpeg_rows(proxy_url(p, "live/clip.wmv"), group,
                                          output_args=["-t", "3"], timeout=30)
            assert code == 0, err
            video = [r for r in rows if r[0] == "0"]
            assert len(video) > 40  # 25 fps for about 2 s and more
            assert [r.result for r in p.wait_records(1)] == ["SPLIT"]
        finally:
            holder.close()


@pytest.mark.skipif(not have("vlc"), reason="needs VLC")
@pytest.mark.parametrize("scheme", ["mmst", "mmsu"])
def test_vlc_joins_a_split_broadcast(origin, scheme) -> None:
    with ProxyThread(routed(origin.port)) as p, peers.ProcessGroup() as group:
        holder = Viewer(p)
        try:
            time.sleep(0.5)
            lock = vlc_udp_port_lock() if scheme == "mmsu" else contextlib.nullcontext()
            with lock:
                dump, log, _ = vlc_dump(proxy_url(p, "live/clip.wmv", scheme), group, seconds=4)
            assert "connection successful" in log, log[-3000:]
            assert dump.startswith(holder.header)  # the broadcast's header, then its packets
            assert len(dump) - len(holder.header) > 40 * 3200  # about 25 packets a second
            [record] = p.wait_records(1)
            assert (record.result, record.transport) == ("SPLIT", scheme.upper())
        finally:
            holder.close()


# -- the origin goes away -------------------------------------------------------------------


def _origin_on(port: int) -> OriginThread:
    """The reference origin on a given port (to stop it and start another in its place)."""
    options = dataclasses.replace(loopback_options(media_root()), listen=f"127.0.0.1:{port}")
    return OriginThread("wmt", options, scheme="mmst")


def _started(stack: contextlib.ExitStack, origin: OriginThread) -> Callable[[], None]:
    """Start ``origin``; the function that stops it (once: the stack stops it otherwise)."""
    origin.__enter__()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            origin.__exit__(None, None, None)

    stack.callback(stop)
    return stop


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_the_feed_reconnects_when_the_origin_comes_back() -> None:
    port = free_port()
    with contextlib.ExitStack() as stack:
        stop_first = _started(stack, _origin_on(port))
        p = stack.enter_context(ProxyThread(routed(port, "[split]\nlinger = 0.5\n")))
        viewers: list[Viewer] = []
        stack.callback(lambda: [v.close() for v in viewers])
        viewers += [Viewer(p), Viewer(p), Viewer(p, udp=True)]
        assert _wait_for(lambda: all(len(v.locations()) > 10 for v in viewers), 10)
        stop_first()  # the origin goes away...
        second = stack.enter_context(_origin_on(port))  # ...and comes back on its port
        counts = [len(v.locations()) for v in viewers]
        assert _wait_for(  # backoff 0.5 s, then 1 s: the viewers get the new packets
            lambda: all(len(v.locations()) > c + 20 for v, c in zip(viewers, counts, strict=True)),
            15,
        )
        assert second.session_count() == 3  # each viewer's accounting session came back
        assert all(v.got.end is None for v in viewers)  # no player saw an end
        assert {x.packet_id for v in viewers for x in v.got.packets} == {5}
        for v in viewers:
            v.client.send(mms.CloseFile())
            v.close()
        records = second.wait_records(3, timeout=15)
        # one of the three sessions carries the broadcast; the others only read the header
        assert sorted(r.bytes_to_client > 50_000 for r in records) == [False, False, True]
        assert sorted(r.result for r in p.wait_records(3)) == ["PASS", "SPLIT", "SPLIT"]
        assert p.wait_idle(10)


def test_viewers_end_cleanly_when_the_origin_does_not_come_back() -> None:
    with contextlib.ExitStack() as stack:
        o = OriginThread.loopback("wmt", media_root(), scheme="mmst")
        stop_origin = _started(stack, o)
        config = routed(o.port, "[split]\nreconnect_timeout = 2.0\n")
        p = stack.enter_context(ProxyThread(config))
        viewers: list[Viewer] = []
        stack.callback(lambda: [v.close() for v in viewers])
        viewers += [Viewer(p), Viewer(p), Viewer(p, udp=True)]
        assert _wait_for(lambda: all(len(v.locations()) > 10 for v in viewers), 10)
        stop_origin()
        lost = time.monotonic()
        assert _wait_for(lambda: all(v.got.end is not None for v in viewers), 10)
        assert time.monotonic() - lost < 2.0 + 2.0  # reconnect_timeout, and a little
        for v in viewers:
            assert isinstance(v.got.end, mms.ReportEndOfStream)
            assert v.got.end.hr == mms.HResult.CONNECTION_LOST
        assert p.wait_idle(10)  # every session ended, none stuck
        records = p.wait_records(3)
        assert sorted(r.result for r in records) == ["PASS", "SPLIT", "SPLIT"]
        assert all("live feed lost" in r.reason for r in records), [r.reason for r in records]
        assert next(r for r in records if r.result == "PASS").status == 502
