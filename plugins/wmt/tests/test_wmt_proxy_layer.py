"""The MMS proxy layer as a sans-I/O state machine: playbooks, a scripted origin, no sockets.

The player's side is a Playbook (what the player is sent is read back from the recording stream
sink); the origin's side is scripted with the wire functions, so each test says exactly what the
origin answered. Clips are made by ffmpeg (skipped without it).
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wmt_origin_env import clip, file_packets, have
from wmt_proxy_env import BAD_INPUTS, CONNECT

from mediacache.cache.service import CacheService
from mediacache.cache.store import CacheStore
from mediacache.config import Route
from mediacache.sansio.commands import (
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    OpenConnection,
    SetTimer,
)
from mediacache.sansio.connection import Connection
from mediacache.splitter import SplitterService
from mediacache.testing.playbook import Playbook, RecordingSink
from mediacache_wmt.layer import ACCEPTS, MmsProxyLayer, Phase, make_layer
from mediacache_wmt.plugin import WmtConfig
from mediacache_wmt.routing import Target, host_hint, resolve_target
from mediacache_wmt.wire import mms

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg to make the clips")
Message = mms.MmsCommand | mms.MmsDataPacket
ROUTE = Route(format="wmt", prefix="/w/", origin="mms://origin.test:1756/")


def parse_all(data: bytes) -> list[Message]:
    reader = mms.MmsStreamReader()
    reader.receive_data(data)
    found: list[Message] = []
    while (event := reader.next_event()) is not None:
        found.append(event)
    return found


class Session:
    """One player's session with the proxy layer, and a scripted origin behind it."""

    def __init__(self, *, cache: bool = True, routes: tuple[Route, ...] = (ROUTE,)) -> None:
        self.pb = Playbook(make_layer, settings=WmtConfig(), format_name="wmt",
                           routes=routes, listen_port=1755)
        self.pb.client.local = ("192.0.2.1", 1755)
        self.store = CacheStore(None, memory_limit=1 << 26, disk_limit=0)
        if cache:
            self.pb.ctx.cache = CacheService(self.store)
        self.pb.ctx.splitter = SplitterService()
        self.layer: MmsProxyLayer = self.pb.layer  # type: ignore[assignment]
        self.out: list[Command] = self.pb.start()
        self.sink: RecordingSink = self.pb.dataplane.sinks[0]
        self.read = 0
        self.seq = 0
        self.origin: Connection | None = None
        self.origin_seq = 0

    # -- the player -----------------------------------------------------------------------

    def send(self, cmd: mms.MmsCommand) -> list[Command]:
        data = mms.build_command(cmd, sequence=self.seq)
        self.seq += 1
        self.out = self.pb.client_sends(data)
        return self.out

    def player_got(self) -> list[Message]:
        """What the player was sent since the last call (commands and MMST data, in order)."""
        new = b"".join(self.sink.payloads[self.read:])
        self.read = len(self.sink.payloads)
        return parse_all(new)

    def ask(self, cmd: mms.MmsCommand) -> list[Message]:
        self.send(cmd)
        return self.player_got()

    def to_open(self, name: str = "w/clip.wmv") -> None:
        self.ask(mms.Connect("NSPlayer/7.0.0.1956; {0}; Host: proxy.test"))
        self.ask(mms.FunnelInfo())
        self.ask(mms.ConnectFunnel.for_transport("192.0.2.9", "TCP", 1037))
        self.send(mms.OpenFile(name))
        [self.origin] = self.pb.opened_connections(self.out)
        self.out = self.pb.opened(self.origin)

    # -- the origin -----------------------------------------------------------------------

    def origin_got(self) -> list[Message]:
        assert self.origin is not None
        return parse_all(b"".join(self.pb.sent_to(self.origin, self.out)))

    def origin_says(self, *items: mms.MmsCommand | bytes) -> list[Command]:
        assert self.origin is not None
        data = b""
        for item in items:
            if isinstance(item, bytes):
                data += item
            else:
                data += mms.build_command(item, sequence=self.origin_seq)
                self.origin_seq += 1
        self.out = self.pb.origin_sends(self.origin, data)
        return self.out

    def origin_handshake(self, opened: mms.ReportOpenFile | None = None) -> None:
        """The origin accepts Connect, FunnelInfo, ConnectFunnel, OpenFile."""
        h, packets = file_packets(clip("clip.wmv"))
        self.origin_says(mms.ReportConnectedEx())
        self.origin_says(mms.ReportFunnelInfo())
        self.origin_says(mms.ReportConnectedFunnel())
        self.origin_says(opened or mms.ReportOpenFile(
            file_duration=h.duration, file_packet_size=h.packet_size,
            file_packet_count=len(packets), file_header_size=len(h.raw),
        ))

    def origin_header(self) -> None:
        h, _ = file_packets(clip("clip.wmv"))
        self.origin_says(mms.ReportReadBlock(), *mms.header_packets(h.raw))

    def records(self) -> list[EmitRecord]:
        return [c for _, out in self.pb.history for c in out if isinstance(c, EmitRecord)]


def closes(out: list[Command]) -> list[CloseConnection]:
    return [c for c in out if isinstance(c, CloseConnection)]


# -- routing ------------------------------------------------------------------------------


def test_targets_forward_reverse_and_refused() -> None:
    common = {"routes": [ROUTE], "format_name": "wmt", "listen_port": 1755,
              "local_host": "192.0.2.1", "origin_port": 1755, "forward": True}
    assert resolve_target("w/a/b.wmv", None, **common) == Target("origin.test", 1756, "a/b.wmv",
                                                                 ROUTE)
    assert resolve_target("/w/a.wmv", "x", **common) == Target("origin.test", 1756, "a.wmv", ROUTE)
    assert resolve_target("a.wmv", "origin.example", **common) == Target("origin.example", 1755,
                                                                        "a.wmv")
    assert resolve_target("a.wmv", "o.example:8000", **common) == Target("o.example", 8000, "a.wmv")
    assert resolve_target("mms://o.example/x.wmv?a=1", None, **common) == Target(
        "o.example", 1755, "x.wmv?a=1")
    assert resolve_target("mms://proxy:1755/w/y.wmv", None, **common) == Target(
        "origin.test", 1756, "y.wmv", ROUTE)
    assert isinstance(resolve_target("a.wmv", None, **common), str)  # no route, no host
    assert isinstance(resolve_target("mms://192.0.2.1/a.wmv", None, **common), str)  # ourselves
    assert isinstance(resolve_target("a.wmv", "192.0.2.1", **common), str)  # the proxy itself
    assert isinstance(resolve_target("http://o/x", None, **common), str)
    assert isinstance(resolve_target("a.wmv", "o.example", **{**common, "forward": False}), str)
    assert Target("::1", 1755, "a").url == "mms://[::1]:1755/a"


def test_host_hint_reads_the_connect_string() -> None:
    assert host_hint("NSPlayer/7.0.0.1956; {GUID}; Host: origin.example") == "origin.example"
    assert host_hint("NSPlayer/9.0; host:o:1756") == "o:1756"
    assert host_hint("NSPlayer/9.0; {GUID}") is None


# -- the handshake --------------------------------------------------------------------------


def test_the_proxy_answers_the_player_and_opens_the_origin_at_openfile() -> None:
    s = Session()
    [hello] = s.ask(mms.Connect("NSPlayer/7.0.0.1956; {0}; Host: proxy.test",
                                play_incarnation=7))
    assert isinstance(hello, mms.ReportConnectedEx) and hello.play_incarnation == 7
    assert isinstance(s.ask(mms.FunnelInfo())[0], mms.ReportFunnelInfo)
    assert isinstance(s.ask(mms.ConnectFunnel.for_transport("x", "TCP", 1))[0],
                      mms.ReportConnectedFunnel)
    assert not s.pb.opened_connections(s.out)
    s.send(mms.OpenFile("w/clip.wmv", play_incarnation=9))
    [origin] = s.pb.opened_connections(s.out)
    assert origin.peer == ("origin.test", 1756)
    s.origin = origin
    s.out = s.pb.opened(origin)
    [connect] = s.origin_got()
    assert isinstance(connect, mms.Connect)
    assert connect.subscriber_name.endswith("Host: origin.test")
    assert s.player_got() == []  # the player waits for the origin's answer
    s.origin_says(mms.ReportConnectedEx())
    assert isinstance(s.origin_got()[0], mms.FunnelInfo)
    s.origin_says(mms.ReportFunnelInfo())
    [funnel] = s.origin_got()
    assert isinstance(funnel, mms.ConnectFunnel) and funnel.transport is not None
    assert funnel.transport[1] == "TCP"  # always TCP to the origin
    s.origin_says(mms.ReportConnectedFunnel())
    [open_file] = s.origin_got()
    assert isinstance(open_file, mms.OpenFile) and open_file.file_name == "clip.wmv"
    s.origin_says(mms.ReportOpenFile(file_packet_size=3200, play_incarnation=1))
    [opened] = s.player_got()
    assert isinstance(opened, mms.ReportOpenFile) and opened.hr == 0
    assert opened.play_incarnation == 9  # the player's own
    assert s.layer.phase is Phase.OPEN


def test_player_commands_wait_their_turn_behind_the_origin() -> None:
    s = Session()
    s.to_open()
    s.origin_handshake()
    s.player_got()
    both = (mms.build_command(mms.ReadBlock(), sequence=10)
            + mms.build_command(mms.StreamSwitch.select([1, 2]), sequence=11))
    s.out = s.pb.client_sends(both)
    assert [type(m) for m in s.origin_got()] == [mms.ReadBlock]
    s.origin_header()
    assert [type(m) for m in s.origin_got()] == [mms.StreamSwitch]  # now its turn
    got = s.player_got()
    assert isinstance(got[0], mms.ReportReadBlock)
    assert all(isinstance(m, mms.MmsDataPacket) for m in got[1:])


def test_an_origin_refusal_reaches_the_player_as_its_error() -> None:
    s = Session()
    s.to_open()
    s.origin_says(mms.ReportConnectedEx(hr=mms.HResult.TOO_MANY_SESSIONS))
    [reply] = s.player_got()
    assert isinstance(reply, mms.ReportOpenFile)
    assert (reply.hr, reply.open_file_id) == (mms.HResult.TOO_MANY_SESSIONS, 0)
    assert CloseConnection(s.pb.client, drain=True) in closes(s.out)
    [record] = s.records()
    assert record.record.status == 453


def test_no_route_and_no_host_is_file_not_found() -> None:
    s = Session(routes=())
    s.ask(mms.Connect("NSPlayer/7.0.0.1956; {0}"))
    s.ask(mms.FunnelInfo())
    s.ask(mms.ConnectFunnel.for_transport("x", "TCP", 1))
    s.send(mms.OpenFile("clip.wmv"))
    [reply] = s.player_got()
    assert isinstance(reply, mms.ReportOpenFile) and reply.hr == mms.HResult.FILE_NOT_FOUND
    assert not s.pb.opened_connections(s.out)
    assert s.records()[0].record.status == 404


def test_a_challenge_is_relayed_with_its_cookie() -> None:
    s = Session()
    s.to_open()
    s.origin_says(mms.ReportConnectedEx(authen_package="BASIC"))
    s.origin_says(mms.ReportFunnelInfo())
    s.origin_says(mms.ReportConnectedFunnel())
    s.origin_says(mms.SecurityChallenge(token=b"r\x00", cookie=77))
    [challenge] = s.player_got()
    assert isinstance(challenge, mms.SecurityChallenge) and challenge.cookie == 77
    assert s.layer.phase is Phase.CHALLENGED and s.layer.authenticated
    s.send(mms.SecurityResponse(b"dG9rZW4=\x00", cookie=77))
    [response] = s.origin_got()
    assert response == mms.SecurityResponse(b"dG9rZW4=\x00", cookie=77)


# -- caching --------------------------------------------------------------------------------


def _to_miss(s: Session) -> list[bytes]:
    s.to_open()
    s.origin_handshake()
    s.send(mms.ReadBlock())
    s.origin_header()
    s.send(mms.StartPlaying(play_incarnation=4))
    s.origin_says(mms.ReportStartedPlaying(play_incarnation=5))
    assert s.layer.mode == "MISS" and s.layer.recorder is not None
    _, packets = file_packets(clip("clip.wmv"))
    return [mms.build_data_packet(n, 5, 0, p) for n, p in enumerate(packets)]


def test_a_complete_miss_is_committed_and_relayed_with_the_players_packet_id() -> None:
    s = Session()
    frames = _to_miss(s)
    s.player_got()
    s.origin_says(b"".join(frames))
    got = s.player_got()
    assert [m.packet_id for m in got if isinstance(m, mms.MmsDataPacket)] == [4] * len(frames)
    s.origin_says(mms.ReportEndOfStream(play_incarnation=5),
                  mms.build_data_packet(0, 5, 0, bytes(3201)))  # the origin's end marker
    end, trailer = s.player_got()
    assert isinstance(end, mms.ReportEndOfStream) and end.play_incarnation == 4
    assert isinstance(trailer, mms.MmsDataPacket) and len(trailer.payload) == 3201  # ours
    [info] = s.store.list()
    assert info.key.variant == "1,2" and s.store.get(info.key) is not None
    assert len(s.store.get(info.key)) == len(frames)  # type: ignore[arg-type]


def test_an_incomplete_miss_is_not_cached() -> None:
    s = Session()
    frames = _to_miss(s)
    s.origin_says(b"".join(frames[:10]), mms.ReportEndOfStream(play_incarnation=5))
    assert s.store.list() == [] and s.store.stats().fills == 0


def test_a_location_going_backwards_aborts_the_fill() -> None:
    s = Session()
    frames = _to_miss(s)
    s.origin_says(frames[0] + frames[1] + frames[1])
    assert s.layer.recorder is None and s.store.stats().fills == 0


@pytest.mark.parametrize("bad", [b"\x00" * 64, b"GET / HTTP/1.0\r\n\r\n"])
def test_garbage_in_the_middle_of_a_miss_caches_nothing(bad) -> None:
    s = Session()
    frames = _to_miss(s)
    s.origin_says(b"".join(frames[:20]))
    out = s.pb.client_sends(bad)
    assert CloseConnection(s.pb.client, drain=True) in closes(out)
    assert CloseConnection(s.origin) in closes(out)  # type: ignore[arg-type]
    assert s.store.list() == [] and s.store.stats().fills == 0
    [record] = s.records()
    assert record.record.status == 400 and record.record.result == "MISS"
    assert s.pb.client_sends(mms.build_command(mms.CloseFile(), sequence=99)) == []


# -- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("data", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_gets_a_clean_close(data) -> None:
    s = Session()
    out = s.pb.client_sends(data)
    if s.layer.phase is not Phase.CLOSED:  # a prefix: the rest may still come, or never
        out = s.pb.closed(s.pb.client)
    assert s.layer.phase is Phase.CLOSED
    assert not s.pb.opened_connections(out)
    [record] = s.records()
    assert record.record.status in (0, 400)  # 400: refused at once; 0: cut off, then gone
    assert s.pb.client_sends(CONNECT) == []  # nothing after the end


@pytest.mark.parametrize(
    ("first", "reply_type"),
    [
        (mms.OpenFile("w/clip.wmv"), mms.ReportOpenFile),
        (mms.StartPlaying(), mms.ReportStartedPlaying),
        (mms.ReadBlock(), mms.ReportReadBlock),
    ],
)
def test_commands_out_of_order_get_an_error_reply_then_a_close(first, reply_type) -> None:
    s = Session()
    if not isinstance(first, mms.OpenFile):
        s.ask(mms.Connect("x"))
        s.ask(mms.FunnelInfo())
        s.ask(mms.ConnectFunnel.for_transport("x", "TCP", 1))
    [reply] = s.ask(first)
    assert isinstance(reply, reply_type) and reply.hr == mms.HResult.UNEXPECTED  # type: ignore[attr-defined]
    assert CloseConnection(s.pb.client, drain=True) in closes(s.out)
    assert s.records()[0].record.status == 400


def test_the_transition_table_names_every_phase() -> None:
    assert set(ACCEPTS) == set(Phase)
    assert ACCEPTS[Phase.START] == {mms.Connect}


def test_a_truncated_command_then_a_close_ends_the_session_quietly() -> None:
    s = Session()
    s.pb.client_sends(CONNECT[:30])
    assert s.player_got() == []
    out = s.pb.closed(s.pb.client)
    assert s.layer.phase is Phase.CLOSED and not s.pb.opened_connections(out)
    assert s.records()[0].record.reason == "client closed"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=5))
def test_random_bytes_never_break_the_layer(chunks) -> None:
    s = Session()
    for chunk in chunks:
        for command in s.pb.client_sends(chunk):
            assert not isinstance(command, OpenConnection)
    s.pb.closed(s.pb.client)
    assert len(s.records()) == 1
    assert s.records()[0].record.status != 500  # never an internal error


# -- keep-alives and timeouts ----------------------------------------------------------------


def test_origin_pings_are_answered_and_never_reach_the_player() -> None:
    s = Session()
    s.to_open()
    s.origin_handshake()
    s.player_got()
    s.origin_says(mms.Ping(param1=3, param2=4))
    assert s.origin_got() == [mms.Pong(param1=3, param2=4)]
    assert s.player_got() == []


def test_a_silent_player_is_pinged_then_dropped() -> None:
    s = Session()
    s.to_open()
    s.origin_handshake()
    s.player_got()
    timeout = WmtConfig().session_timeout
    s.pb.clock.now += timeout / 2
    s.pb.timer("idle")
    assert s.player_got() == [mms.Ping()]
    s.pb.clock.now += timeout / 2
    s.out = s.pb.timer("idle")
    assert CloseConnection(s.pb.client) in closes(s.out)
    assert isinstance(s.origin_got()[-1], mms.CloseFile)  # the origin session ends with it
    assert (s.records()[0].record.status, s.records()[0].record.reason) == (408, "timeout")


def test_an_origin_that_does_not_answer_gets_the_player_a_timeout() -> None:
    s = Session()
    s.to_open()
    s.origin_handshake()
    s.send(mms.ReadBlock())
    s.player_got()
    out = s.pb.timer("origin-response")
    [reply] = s.player_got()
    assert isinstance(reply, mms.ReportReadBlock) and reply.hr == mms.HResult.TIMEOUT
    assert CloseConnection(s.origin) in closes(out)  # type: ignore[arg-type]


def test_an_unsolicited_pong_is_echoed_once() -> None:
    s = Session()
    s.ask(mms.Connect("x"))
    assert s.ask(mms.Pong(param1=1)) == [mms.Ping(param1=1)]
    assert s.ask(mms.Pong(param1=1)) == []  # the answer to our Ping


def test_a_client_the_access_list_refuses_is_denied_at_openfile() -> None:
    s = Session()
    s.pb.ctx.access_allowed = lambda host: False
    s.ask(mms.Connect("x; Host: proxy.test"))
    s.ask(mms.FunnelInfo())
    s.ask(mms.ConnectFunnel.for_transport("x", "TCP", 1))
    s.send(mms.OpenFile("w/clip.wmv"))
    [reply] = s.player_got()
    assert isinstance(reply, mms.ReportOpenFile) and reply.hr == mms.HResult.ACCESS_DENIED
    assert not s.pb.opened_connections(s.out)
    [record] = s.records()
    assert (record.record.result, record.record.status) == ("DENIED", 403)


def test_an_unreachable_parent_is_bypassed() -> None:
    s = Session()
    s.pb.ctx.parent = "mms://parent.test:1757"
    s.ask(mms.Connect("x; Host: proxy.test"))
    s.ask(mms.FunnelInfo())
    s.ask(mms.ConnectFunnel.for_transport("x", "TCP", 1))
    s.send(mms.OpenFile("w/clip.wmv"))
    [parent] = s.pb.opened_connections(s.out)
    assert parent.peer == ("parent.test", 1757)
    out = s.pb.opened(parent, "connection refused")
    [origin] = s.pb.opened_connections(out)
    assert origin.peer == ("origin.test", 1756)
    s.origin = origin
    s.out = s.pb.opened(origin)
    s.origin_says(mms.ReportConnectedEx())
    s.origin_says(mms.ReportFunnelInfo())
    s.origin_says(mms.ReportConnectedFunnel())
    [open_file] = s.origin_got()
    assert isinstance(open_file, mms.OpenFile) and open_file.file_name == "clip.wmv"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=200), max_size=4))
def test_random_bytes_from_the_origin_end_the_session_cleanly(chunks) -> None:
    s = Session()
    s.to_open()
    for chunk in chunks:
        s.origin_says(chunk)
    s.pb.closed(s.origin)  # type: ignore[arg-type]
    [record] = s.records()
    assert record.record.status != 500  # a bad origin is a 502, never an internal error
    assert s.layer.phase is Phase.CLOSED


def test_a_fill_whose_origin_goes_silent_is_aborted_and_the_relay_goes_on() -> None:
    s = Session()
    frames = _to_miss(s)
    s.origin_says(b"".join(frames[:5]))
    s.pb.clock.now += 10
    s.pb.timer("fill-watchdog")
    assert s.layer.recorder is not None  # 10 s of silence: still waiting
    s.pb.clock.now += 5
    out = s.pb.timer("fill-watchdog")
    assert s.layer.recorder is None and s.store.stats().fills == 0
    assert not closes(out)
    s.origin_says(b"".join(frames[5:]), mms.ReportEndOfStream(play_incarnation=5))
    assert s.store.list() == []  # what came after the gap is relayed, never cached


def test_a_background_fill_that_fails_ends_its_session_and_logs_every_origin_byte() -> None:
    """The player leaves past half the clip: its record is written, the fill goes on. The
    origin then goes silent: the fill is aborted and, with nobody left, the session ends; the
    origin bytes after the player left are in one more record (MISS, no player bytes)."""
    s = Session()
    frames = _to_miss(s)
    s.origin_says(b"".join(frames[:40]))  # about three quarters of the clip
    s.pb.closed(s.pb.client)
    assert s.layer.background and len(s.records()) == 1
    s.origin_says(b"".join(frames[40:45]))
    s.pb.clock.now += 20
    out = s.pb.timer("fill-watchdog")
    assert s.layer.closed and CloseConnection(s.origin) in out  # nothing left to pull
    assert s.store.list() == [] and s.store.stats().fills == 0
    player, background = (r.record for r in s.records())
    assert (player.result, background.result) == ("MISS", "MISS")
    assert background.reason.startswith("background fill aborted: the origin sent nothing")
    assert background.bytes_to_client == 0 and background.url == player.url
    assert player.origin_bytes + background.origin_bytes == sum(map(len, frames[:45]))


# -- live splitting: reconnecting the feed ---------------------------------------------------

LIVE_ROUTE = Route(format="wmt", prefix="/w/", origin="mms://origin.test:1756/", live=True)


def _opened_live(splitter: SplitterService) -> Session:
    """A player of ``w/live.wmv`` (the route says live) up to its StartPlaying (header read)."""
    s = Session(routes=(LIVE_ROUTE,))
    s.pb.ctx.splitter = splitter
    s.to_open("w/live.wmv")
    s.origin_handshake()
    s.send(mms.ReadBlock())
    s.origin_header()
    return s


def _live_viewer(splitter: SplitterService, packet_id: int, select: set[int] | None = None
                 ) -> Session:
    """A player of ``w/live.wmv``: the first one of ``splitter`` owns the feed (its
    StartPlaying goes to the origin), any later one joins it."""
    s = _opened_live(splitter)
    if select is not None:
        h, _ = file_packets(clip("clip.wmv"))
        s.send(mms.StreamSwitch.select({n: mms.Thinning.ALL if n in select else mms.Thinning.OFF
                                        for n in h.stream_numbers}))
        s.origin_says(mms.ReportStreamSwitch())
    s.send(mms.StartPlaying(play_incarnation=packet_id))
    if splitter.feeds:
        assert s.layer.mode == "SPLIT"
    else:
        s.origin_says(mms.ReportStartedPlaying(play_incarnation=5))
        assert s.layer.mode == "FEED" and s.layer.feed is not None
    s.player_got()
    return s


def _frames(first: int, count: int) -> list[bytes]:
    _, packets = file_packets(clip("clip.wmv"))
    return [mms.build_data_packet(first + n, 5, 0, packets[n]) for n in range(count)]


def _data_ids(got: list[Message]) -> list[int]:
    return [m.packet_id for m in got if isinstance(m, mms.MmsDataPacket)]


def _logs(out: list[Command], level: str) -> list[str]:
    return [c.message for c in out if isinstance(c, Log) and c.level == level]


def _timers(out: list[Command], name: str) -> list[float]:
    return [c.delay for c in out if isinstance(c, SetTimer) and c.name == name]


def _deliver_posted(s: Session) -> list[Command]:
    """Run the events other sessions posted to ``s`` (a no-op timer makes the Playbook go)."""
    return s.pb.timer("nothing")


def _reconnect(s: Session, *, start: bool, header: bool = True,
               switch: mms.StreamSwitch | None = None) -> list[Message]:
    """The timer fires, a new origin connection opens and takes the whole handshake; what the
    origin was asked, in order."""
    old = s.origin
    out = s.pb.timer("feed-reconnect")
    [s.origin] = s.pb.opened_connections(out)
    assert s.origin is not old and s.origin.peer == ("origin.test", 1756)
    s.origin_seq = 0
    s.out = s.pb.opened(s.origin)
    asked = s.origin_got()
    h, packets = file_packets(clip("clip.wmv"))
    answers: list[tuple[mms.MmsCommand | bytes, ...]] = [
        (mms.ReportConnectedEx(),), (mms.ReportFunnelInfo(),), (mms.ReportConnectedFunnel(),),
        (mms.ReportOpenFile(file_duration=h.duration, file_packet_size=h.packet_size,
                            file_packet_count=len(packets), file_header_size=len(h.raw)),),
    ]
    if header:
        answers.append((mms.ReportReadBlock(), *mms.header_packets(h.raw)))
    if switch is not None:
        answers.append((mms.ReportStreamSwitch(),))
    if start:
        answers.append((mms.ReportStartedPlaying(play_incarnation=5),))
    for answer in answers:
        s.origin_says(*answer)
        asked += s.origin_got()
    return asked


def test_a_lost_feed_reconnects_and_its_viewers_get_the_new_packets() -> None:
    splitter = SplitterService(reconnect_timeout=15.0)
    owner = _live_viewer(splitter, 4, select={1})
    joiner = _live_viewer(splitter, 7, select={1})
    owner.origin_says(b"".join(_frames(0, 5)))
    assert _data_ids(owner.player_got()) == [4] * 5 and _data_ids(joiner.player_got()) == [7] * 5
    out = owner.pb.closed(owner.origin)  # type: ignore[arg-type]
    assert _logs(out, "WARNING") and "reconnecting" in _logs(out, "WARNING")[0]
    assert _timers(out, "feed-reconnect") == [0.5]
    assert not closes(out) and not owner.records() and splitter.feeds
    owner.pb.clock.now += 0.5
    asked = _reconnect(owner, start=True, switch=owner.layer.switch_cmd)
    assert [type(m) for m in asked] == [mms.Connect, mms.FunnelInfo, mms.ConnectFunnel,
                                        mms.OpenFile, mms.ReadBlock, mms.StreamSwitch,
                                        mms.StartPlaying]
    open_file, switch, start = asked[3], asked[5], asked[6]
    assert isinstance(open_file, mms.OpenFile) and open_file.file_name == "live.wmv"
    assert isinstance(switch, mms.StreamSwitch) and switch.selected == frozenset({1})
    assert isinstance(start, mms.StartPlaying) and start.play_incarnation == 5
    assert any("reconnected" in m for m in _logs(owner.out, "INFO"))
    assert owner.layer.reconnecting is None
    assert owner.player_got() == [] and joiner.player_got() == []  # nothing the players see
    owner.origin_says(b"".join(_frames(0, 8)))  # the new connection's packets
    assert _data_ids(owner.player_got()) == [4] * 8 and _data_ids(joiner.player_got()) == [7] * 8
    assert not owner.records() and not joiner.records()


def test_an_mmsu_viewer_keeps_its_packet_counter_across_a_reconnection() -> None:
    splitter = SplitterService()
    owner = _live_viewer(splitter, 4)
    joiner = Session(routes=(LIVE_ROUTE,))
    joiner.pb.ctx.splitter = splitter
    joiner.ask(mms.Connect("NSPlayer/7.0.0.1956; Host: proxy.test"))
    joiner.ask(mms.FunnelInfo())
    joiner.ask(mms.ConnectFunnel.for_transport("192.0.2.9", "UDP", 7000))
    joiner.send(mms.OpenFile("w/live.wmv"))
    [joiner.origin] = joiner.pb.opened_connections(joiner.out)
    joiner.out = joiner.pb.opened(joiner.origin)
    joiner.origin_handshake()
    joiner.send(mms.ReadBlock())
    joiner.origin_header()
    joiner.send(mms.StartPlaying(play_incarnation=9))
    udp = joiner.pb.dataplane.sinks[-1]
    assert udp.kind == "udp" and joiner.layer.mode == "SPLIT"
    joiner.pb.timer("flush")  # the datagrams held behind 0x05 may go
    owner.origin_says(b"".join(_frames(0, 3)))
    owner.pb.closed(owner.origin)  # type: ignore[arg-type]
    owner.pb.clock.now += 0.5
    _reconnect(owner, start=True)
    owner.origin_says(b"".join(_frames(0, 3)))
    joiner.pb.timer("flush")
    data = [d for d in udp.payloads if mms.parse_data_packet(d).packet_id == 9]
    assert len(data) == 6
    assert [d[5] for d in data] == list(range(6))  # AFFlags: one counter throughout


def test_a_joiner_reconnects_its_accounting_session_without_asking_for_data() -> None:
    splitter = SplitterService()
    owner = _live_viewer(splitter, 4)
    joiner = _live_viewer(splitter, 7)
    out = joiner.pb.closed(joiner.origin)  # type: ignore[arg-type]
    assert "accounting session lost its origin" in _logs(out, "WARNING")[0]
    joiner.send(mms.Logging(b"log"))  # waits for the new connection
    joiner.pb.clock.now += 0.5
    asked = _reconnect(joiner, start=False)
    assert [type(m) for m in asked] == [mms.Connect, mms.FunnelInfo, mms.ConnectFunnel,
                                        mms.OpenFile, mms.ReadBlock, mms.Logging]
    assert any("accounting session reconnected" in m for m in _logs(joiner.out, "INFO"))
    owner.origin_says(b"".join(_frames(0, 4)))
    assert _data_ids(joiner.player_got()) == [7] * 4  # the feed never stopped for it


def test_reconnection_attempts_back_off_from_half_a_second_to_four() -> None:
    splitter = SplitterService(reconnect_timeout=30.0)
    owner = _live_viewer(splitter, 4)
    out = owner.pb.closed(owner.origin)  # type: ignore[arg-type]
    delays = _timers(out, "feed-reconnect")
    for _ in range(6):
        owner.pb.clock.now += delays[-1]
        [conn] = owner.pb.opened_connections(owner.pb.timer("feed-reconnect"))
        delays += _timers(owner.pb.opened(conn, "connection refused"), "feed-reconnect")
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert owner.layer.reconnecting is not None and not owner.records()


def test_a_refusal_or_silence_while_reconnecting_is_one_failed_attempt() -> None:
    splitter = SplitterService()
    owner = _live_viewer(splitter, 4)
    owner.pb.closed(owner.origin)  # type: ignore[arg-type]
    owner.pb.clock.now += 0.5
    [conn] = owner.pb.opened_connections(owner.pb.timer("feed-reconnect"))
    owner.origin, owner.origin_seq = conn, 0
    owner.pb.opened(conn)
    owner.origin_says(mms.ReportConnectedEx(), mms.ReportFunnelInfo(), mms.ReportConnectedFunnel())
    out = owner.origin_says(mms.ReportOpenFile(hr=mms.HResult.FILE_NOT_FOUND, open_file_id=0))
    assert [c.conn for c in closes(out)] == [conn]  # that connection, not the player's
    assert _timers(out, "feed-reconnect") == [1.0]
    owner.pb.clock.now += 1.0
    [conn] = owner.pb.opened_connections(owner.pb.timer("feed-reconnect"))
    owner.pb.opened(conn)
    out = owner.pb.timer("origin-response")  # the origin never answers our Connect
    assert [c.conn for c in closes(out)] == [conn] and _timers(out, "feed-reconnect") == [2.0]
    assert owner.player_got() == [] and not owner.records()


def test_viewers_end_cleanly_when_the_origin_does_not_come_back() -> None:
    splitter = SplitterService(reconnect_timeout=2.0)
    owner = _live_viewer(splitter, 4)
    joiner = _live_viewer(splitter, 7)
    owner.origin_says(b"".join(_frames(0, 2)))
    owner.player_got(), joiner.player_got()
    owner.pb.closed(owner.origin)  # type: ignore[arg-type]
    joiner.pb.closed(joiner.origin)  # type: ignore[arg-type]
    owner.pb.clock.now += 0.5
    timeline = []
    for _ in range(10):  # bounded: 0.5 + 1 + 0.5 (what is left of 2 s)
        if owner.layer.closed:
            break
        out = owner.pb.timer("feed-reconnect")
        if not owner.layer.closed:
            [conn] = owner.pb.opened_connections(out)
            delay = _timers(owner.pb.opened(conn, "connection refused"), "feed-reconnect")[0]
            timeline.append(delay)
            owner.pb.clock.now += delay
    assert timeline == [1.0, 0.5] and owner.layer.closed
    end, trailer = owner.player_got()
    assert isinstance(end, mms.ReportEndOfStream) and end.hr == mms.HResult.CONNECTION_LOST
    assert isinstance(trailer, mms.MmsDataPacket) and trailer.packet_id == 4
    [record] = owner.records()
    assert record.record.status == 502
    assert record.record.reason == "live feed lost: reconnect failed: connection refused"
    assert any("did not get its origin back in 2 s" in m for m in _logs(out, "WARNING"))
    assert not splitter.feeds
    _deliver_posted(joiner)  # the feed-ended notice
    end, _ = joiner.player_got()
    assert isinstance(end, mms.ReportEndOfStream) and end.hr == mms.HResult.CONNECTION_LOST
    [record] = joiner.records()
    assert record.record.result == "SPLIT" and "live feed lost" in record.record.reason
    assert joiner.layer.closed
    assert CloseConnection(joiner.pb.client, drain=True) in joiner.pb.history[-1][1]


def test_a_background_owner_reconnects_at_once() -> None:
    splitter = SplitterService()
    owner = _live_viewer(splitter, 4)
    _live_viewer(splitter, 7)
    owner.pb.closed(owner.pb.client)
    assert owner.layer.background
    out = owner.pb.closed(owner.origin)  # type: ignore[arg-type]
    assert len(owner.pb.opened_connections(out)) == 1  # never a gap with no connection
    assert not _timers(out, "feed-reconnect")
    out = owner.pb.opened(owner.pb.opened_connections(out)[0], "connection refused")
    assert _timers(out, "feed-reconnect") == [0.5]  # then the backoff


def test_a_read_block_waiting_when_the_origin_drops_is_asked_again() -> None:
    splitter = SplitterService()
    owner = _live_viewer(splitter, 4)
    owner.send(mms.ReadBlock(play_incarnation=2))
    owner.pb.closed(owner.origin)  # type: ignore[arg-type]
    owner.pb.clock.now += 0.5
    _reconnect(owner, start=True)
    [again] = owner.origin_got()
    assert isinstance(again, mms.ReadBlock)
    owner.origin_header()
    got = owner.player_got()
    assert isinstance(got[0], mms.ReportReadBlock) and got[0].play_incarnation == 2
    assert all(isinstance(m, mms.MmsDataPacket) and m.packet_id == 2 for m in got[1:])


def test_the_recorded_user_agent_is_the_useragent_part_or_the_first() -> None:
    from mediacache_wmt.layer import user_agent_of

    plain = "NSPlayer/7.0.0.1956; {3300AD50}; Host: o.example"
    assert user_agent_of(plain) == "NSPlayer/7.0.0.1956"
    named = "NSPlayer/7.0.0.1956; {3300AD50}; UserAgent: mediacache-prefetch; Host: p:1755"
    assert user_agent_of(named) == "mediacache-prefetch"
