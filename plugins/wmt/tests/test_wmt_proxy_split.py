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
from test_wmt_proxy_layer import (
    Session,
    _data_ids,
    _deliver_posted,
    _frames,
    _live_viewer,
    closes,
    parse_all,
)
from test_wmt_proxy_layer import _opened_live as opened_live
from wmt_origin_env import (
    clip,
    ffmpeg_rows,
    file_packets,
    have,
    media_root,
    vlc_dump,
    vlc_udp_port_lock,
)
from wmt_proxy_env import ByteCountingRelay, cached_keys, origin_thread, proxy_url, routed

from mediacache.sansio.commands import CloseConnection, SendData
from mediacache.splitter import SplitterService
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
        assert p.wait_idle(15)  # the feed is released after the last viewer (and the linger)
        records = p.records()
        players = [r for r in records if r.bytes_to_client]
        assert sorted(r.result for r in players) == ["PASS"] + ["SPLIT"] * 4
        assert {r.variant for r in records} == {"1,2"}
        # the owner left first: a joiner took the feed over, and lingered after the last one
        rest = {r.reason for r in records if not r.bytes_to_client}
        assert "live feed released (no viewers)" in rest
        assert rest <= {"live feed handed over", "live feed released (no viewers)"}
        assert cached_keys(p) == []  # a broadcast is split, never cached
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


def test_the_owner_leaving_hands_the_feed_over_and_its_origin_session_ends(origin) -> None:
    with ProxyThread(routed(origin.port, "[split]\nlinger = 0.5\n")) as p:
        owner = Viewer(p)
        time.sleep(0.3)
        others = [Viewer(p), Viewer(p, udp=True)]
        try:
            assert _wait_for(lambda: all(len(v.locations()) > 10 for v in others), 10)
            assert origin.session_count() == 3
            owner.client.send(mms.CloseFile())  # as ffmpeg and VLC leave
            owner.close()
            assert _wait_for(lambda: origin.session_count() == 2, 2.0)  # the viewers there
            counts = [len(v.locations()) for v in others]
            time.sleep(1.0)
            for v, count in zip(others, counts, strict=True):
                locations = v.locations()
                assert len(locations) > count + 10  # still fed, now by the successor
                assert all(b - a == 1 for a, b in itertools.pairwise(locations)), "a gap"
                assert v.got.end is None
        finally:
            for v in others:
                v.close()
        records = p.wait_records(5)
        reasons = sorted(r.reason for r in records if r.bytes_to_client == 0)
        assert reasons == ["live feed handed over", "live feed released (no viewers)"]
        assert p.wait_idle(10)


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
        for v in reversed(viewers):  # the owner last: no handover
            v.client.send(mms.CloseFile())
            v.close()
        records = second.wait_records(3, timeout=15)
        # one of the three sessions carries the broadcast; the others only read the header
        assert sorted(r.bytes_to_client > 50_000 for r in records) == [False, False, True]
        assert p.wait_idle(10)
        players = [r for r in p.records() if r.bytes_to_client]
        assert sorted(r.result for r in players) == ["PASS", "SPLIT", "SPLIT"]


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


# -- players whose StartPlaying cross (sans-I/O: the layer against a scripted origin) ---------


def _opened_live(splitter: SplitterService) -> Session:
    """A player of the live route's broadcast up to its StartPlaying, its replies read."""
    s = opened_live(splitter)
    s.player_got()
    return s


def _origin_ever_got(s: Session) -> list[type]:
    """The type of every command the session ever sent to its origin."""
    sent = b"".join(
        c.data
        for _, out in s.pb.history
        for c in out
        if isinstance(c, SendData) and c.conn is s.origin
    )
    reader = mms.MmsStreamReader()
    reader.receive_data(sent)
    found = []
    while (event := reader.next_event()) is not None:
        found.append(type(event))
    return found


def test_start_playings_that_cross_make_one_origin_feed() -> None:
    splitter = SplitterService()
    a, b = _opened_live(splitter), _opened_live(splitter)
    a.send(mms.StartPlaying(play_incarnation=4))
    assert [type(m) for m in a.origin_got()] == [mms.StartPlaying]
    b.send(mms.StartPlaying(play_incarnation=7))  # before the origin answered a's
    assert b.origin_got() == [] and b.player_got() == [] and b.layer.mode == "WAIT"
    a.origin_says(mms.ReportStartedPlaying(play_incarnation=5))
    _deliver_posted(b)  # the feed-start notice: b joins
    (started,) = b.player_got()
    assert isinstance(started, mms.ReportStartedPlaying) and started.play_incarnation == 7
    assert (a.layer.mode, b.layer.mode) == ("FEED", "SPLIT")
    a.player_got()
    a.origin_says(b"".join(_frames(0, 3)))
    assert _data_ids(a.player_got()) == [4] * 3 and _data_ids(b.player_got()) == [7] * 3
    assert mms.StartPlaying not in _origin_ever_got(b)  # b's origin session: accounting


def test_a_refused_owner_hands_the_start_to_a_waiting_player() -> None:
    splitter = SplitterService()
    a, b, c = (_opened_live(splitter) for _ in range(3))
    for s, pid in ((a, 4), (b, 7), (c, 9)):
        s.send(mms.StartPlaying(play_incarnation=pid))
    a.origin_says(mms.ReportStartedPlaying(hr=mms.HResult.NETWORK_BUSY, play_incarnation=5))
    (refused,) = a.player_got()
    assert isinstance(refused, mms.ReportStartedPlaying) and refused.hr and not splitter.feeds
    b.out = _deliver_posted(b)
    assert [type(m) for m in b.origin_got()] == [mms.StartPlaying]  # b starts the feed now
    c.out = _deliver_posted(c)
    assert c.origin_got() == [] and c.layer.mode == "WAIT"  # c waits on, for b
    b.origin_says(mms.ReportStartedPlaying(play_incarnation=5))
    assert b.layer.mode == "FEED" and b.layer.feed is not None
    _deliver_posted(c)
    assert c.layer.mode == "SPLIT" and mms.StartPlaying not in _origin_ever_got(c)


def test_a_player_waits_for_a_starting_feed_for_a_bounded_time() -> None:
    splitter = SplitterService()
    a, b = _opened_live(splitter), _opened_live(splitter)
    a.send(mms.StartPlaying(play_incarnation=4))  # the origin never answers
    b.send(mms.StartPlaying(play_incarnation=7))
    out = b.pb.timer("feed-wait")
    (refused,) = b.player_got()
    assert isinstance(refused, mms.ReportStartedPlaying)
    assert refused.hr == mms.HResult.TIMEOUT and refused.play_incarnation == 7
    assert CloseConnection(b.pb.client, drain=True) in out
    [record] = b.records()
    assert record.record.status == 504 and "did not start in time" in record.record.reason
    assert mms.StartPlaying not in _origin_ever_got(b)


# -- the owner's player leaves: a joiner takes the feed over (sans-I/O) ----------------------


def _broadcast(first: int, count: int) -> list[bytes]:
    """Packets ``first`` .. of a looping broadcast: the same LocationId, the same bytes, on
    every origin session (as the reference origin sends a live file)."""
    _, packets = file_packets(clip("clip.wmv"))
    return [mms.build_data_packet(n, 5, 0, packets[n % len(packets)])
            for n in range(first, first + count)]


def _locations(got: list) -> list[int]:
    return [m.sequence for m in got if isinstance(m, mms.MmsDataPacket)]


def _three_viewers(splitter: SplitterService) -> tuple[Session, Session, Session]:
    """An owner and two joiners who all had packets 0-4; then the owner's player leaves."""
    owner, early, late = _live_viewer(splitter, 4), _live_viewer(splitter, 7), \
        _live_viewer(splitter, 9)
    owner.origin_says(b"".join(_broadcast(0, 5)))
    for s in (owner, early, late):
        assert _locations(s.player_got()) == [0, 1, 2, 3, 4]
    owner.pb.closed(owner.pb.client)
    assert owner.layer.background and splitter.feeds
    return owner, early, late


def _asked_to_take_over(s: Session) -> mms.StartPlaying:
    """Deliver the feed-handover notice: the session's StartPlaying to its own origin."""
    s.out = _deliver_posted(s)
    (start,) = s.origin_got()
    assert isinstance(start, mms.StartPlaying)
    return start


def test_the_latest_joiner_takes_the_feed_over_when_the_owners_player_leaves() -> None:
    splitter = SplitterService()
    owner, early, late = _three_viewers(splitter)
    assert _deliver_posted(early) == []  # the latest joiner is asked, not the earliest
    start = _asked_to_take_over(late)
    assert start.play_incarnation == 5  # our packet id at the origin, as the owner's
    late.send(mms.Logging(b"log"))  # the player's own commands wait behind the take-over
    assert late.origin_got() == []
    owner.origin_says(b"".join(_broadcast(5, 2)))  # meanwhile the former owner feeds on
    late.origin_says(mms.ReportStartedPlaying(play_incarnation=5))
    assert [type(m) for m in late.origin_got()] == [mms.Logging]  # now it goes
    assert late.layer.mode == "FEED" and splitter.feeds[late.layer.feed_key].owner is late.layer
    # detached at once: its next packet reaches nobody, then (feed-handed-over) it ends
    out = owner.origin_says(b"".join(_broadcast(7, 1)))
    assert _locations(early.player_got()) == [5, 6] and _locations(late.player_got()) == [5, 6]
    assert [type(m) for m in parse_all(b"".join(owner.pb.sent_to(owner.origin, out)))] == [
        mms.CloseFile
    ]
    assert owner.origin in [c.conn for c in closes(out)] and owner.layer.closed
    player, handed = (r.record for r in owner.records())
    assert (player.reason, handed.reason) == ("client closed", "live feed handed over")
    assert handed.bytes_to_client == 0
    assert handed.origin_bytes == sum(map(len, _broadcast(5, 3)))  # every byte after it left
    assert player.origin_bytes + handed.origin_bytes == sum(map(len, _broadcast(0, 8)))
    # the successor's origin starts at the key frame before "now": the viewers' packets again
    late.origin_says(b"".join(_broadcast(3, 7)))
    for s, pid in ((early, 7), (late, 9)):
        got = s.player_got()
        assert not any(isinstance(m, mms.ReportStartedPlaying) for m in got)
        assert _locations(got) == [7, 8, 9]  # no packet twice, no gap
        assert set(_data_ids(got)) == {pid}
    assert late.records() == [] and early.records() == []
    late.pb.closed(late.pb.client)  # the new owner's player leaves: the feed is handed on
    assert [type(m) for m in early.origin_got()] == [] and late.layer.background
    assert isinstance(_asked_to_take_over(early), mms.StartPlaying)


def test_a_refused_take_over_asks_the_next_joiner() -> None:
    splitter = SplitterService()
    owner, early, late = _three_viewers(splitter)
    _asked_to_take_over(late)
    late.origin_says(mms.ReportStartedPlaying(hr=mms.HResult.NETWORK_BUSY, play_incarnation=5))
    assert late.layer.mode == "SPLIT" and late.player_got() == []
    assert splitter.feeds[late.layer.feed_key].owner is owner.layer  # still the former's
    _asked_to_take_over(early)
    early.origin_says(mms.ReportStartedPlaying(play_incarnation=5))
    assert early.layer.mode == "FEED" and _deliver_posted(owner) and owner.layer.closed
    early.origin_says(b"".join(_broadcast(4, 3)))
    assert _locations(late.player_got()) == [5, 6]  # the other joiner is fed on
    assert _data_ids(early.player_got()) == [7, 7]


def test_a_joiner_leaving_during_its_take_over_passes_it_on() -> None:
    splitter = SplitterService()
    owner, early, late = _three_viewers(splitter)
    _asked_to_take_over(late)
    late.send(mms.CloseFile())  # the player leaves while the take-over is at the origin
    assert late.layer.closed
    _asked_to_take_over(early)
    early.origin_says(mms.ReportStartedPlaying(play_incarnation=5))
    assert _deliver_posted(owner) and owner.layer.closed


def test_a_joiner_whose_player_left_declines() -> None:
    splitter = SplitterService()
    _, early, late = _three_viewers(splitter)
    late.pb.closed(late.pb.client)  # gone before it read the notice
    assert mms.StartPlaying not in _origin_ever_got(late)
    _asked_to_take_over(early)


def test_with_no_joiner_left_the_owner_carries_the_feed_until_the_linger_ends() -> None:
    splitter = SplitterService(linger=2.0)
    owner = _live_viewer(splitter, 4)
    joiner = _live_viewer(splitter, 7)
    joiner.send(mms.CloseFile())
    owner.origin_says(b"".join(_broadcast(0, 3)))
    owner.pb.closed(owner.pb.client)
    assert owner.layer.background and not owner.layer.closed and splitter.feeds
    owner.origin_says(b"".join(_broadcast(3, 2)))
    for _ in range(3):  # the linger: the feed had no viewer for 2 s
        assert not owner.layer.closed
        owner.pb.clock.now += 1.0
        out = owner.pb.timer("feed-linger")
    assert owner.layer.closed and owner.origin in [c.conn for c in closes(out)]
    _, rest = (r.record for r in owner.records())
    assert rest.reason == "live feed released (no viewers)"
    assert rest.origin_bytes == sum(map(len, _broadcast(3, 2))) and not splitter.feeds
