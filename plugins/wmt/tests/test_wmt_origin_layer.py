"""The reference MMS origin as a sans-I/O layer: playbooks with a settable clock, no sockets.

Clips are made by ffmpeg (skipped without it); everything else is events in, commands out.
"""

from __future__ import annotations

import base64
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wmt_origin_env import clip, file_packets, filtered, have, media_root

from mediacache.sansio.commands import (
    CancelTimer,
    CloseConnection,
    Command,
    EmitRecord,
    Log,
    SendData,
    SetTimer,
)
from mediacache.testing.playbook import Playbook, RecordingDataPlane
from mediacache_wmt.origin import (
    ACCEPTS,
    LEAD,
    UDP_END_DELAY,
    MediaFile,
    MediaLibrary,
    MmsOriginLayer,
    OriginState,
    Phase,
    basic_token,
)
from mediacache_wmt.plugin import WmtConfig
from mediacache_wmt.wire import asf, mms

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg to make the clips")
Message = mms.MmsCommand | mms.MmsDataPacket


class NoUdpDataPlane(RecordingDataPlane):
    """The data plane of a format started without UDP ports."""

    def udp_sink(self, addr, *, rtcp):  # type: ignore[no-untyped-def]
        raise RuntimeError("this format has no UDP ports")


class Session:
    """One playbook session with the origin, speaking MMS commands."""

    def __init__(self, state: OriginState | None = None, *, udp: bool = True) -> None:
        self.state = state or OriginState(MediaLibrary(media_root()))
        self.pb = Playbook(
            lambda ctx: MmsOriginLayer(ctx, self.state), settings=WmtConfig(), format_name="wmt"
        )
        self.pb.ctx.monotonic = self.pb.clock
        if not udp:
            self.pb.ctx.dataplane = NoUdpDataPlane()
        self.layer: MmsOriginLayer = self.pb.layer  # type: ignore[assignment]
        self.seq = 0
        self.out: list[Command] = self.pb.start()

    def send(self, cmd: mms.MmsCommand) -> list[Command]:
        data = mms.build_command(cmd, sequence=self.seq)
        self.seq += 1
        return self.pb.client_sends(data)

    def ask(self, cmd: mms.MmsCommand) -> list[Message]:
        return messages(self.send(cmd))

    def handshake(self, name: str, *, udp_port: int | None = None) -> mms.ReportOpenFile:
        self.ask(mms.Connect("NSPlayer/7.0.0.1956; {0}; Host: x"))
        self.ask(mms.FunnelInfo())
        transport = ("UDP", udp_port) if udp_port else ("TCP", 1037)
        self.ask(mms.ConnectFunnel.for_transport("127.0.0.1", *transport))
        [opened] = self.ask(mms.OpenFile(name))
        assert isinstance(opened, mms.ReportOpenFile) and opened.hr == 0, opened
        return opened

    def run_timers(self, limit: float = 30.0) -> list[tuple[float, list[Command]]]:
        """Fire ``pace``/``eos`` at the times they were armed for; (time, commands) per run."""
        runs = []
        start = self.pb.clock.now
        pending = self._armed(self.out)
        while pending and self.pb.clock.now - start < limit:
            name, delay = pending
            self.pb.clock.now += delay
            out = self.pb.timer(name)
            runs.append((self.pb.clock.now - start, out))
            pending = self._armed(out)
        return runs

    @staticmethod
    def _armed(out: list[Command]) -> tuple[str, float] | None:
        timers = [c for c in out if isinstance(c, SetTimer) and c.name in ("pace", "eos")]
        return (timers[-1].name, timers[-1].delay) if timers else None


def messages(out: list[Command]) -> list[Message]:
    """What the commands sent to the client say, parsed (commands and TCP data packets)."""
    reader = mms.MmsStreamReader()
    for command in out:
        if isinstance(command, SendData):
            reader.receive_data(command.data)
    got: list[Message] = []
    while (event := reader.next_event()) is not None:
        got.append(event)
    return got


def closes(out: list[Command]) -> list[CloseConnection]:
    return [c for c in out if isinstance(c, CloseConnection)]


def records(out: list[Command]) -> list[EmitRecord]:
    return [c for c in out if isinstance(c, EmitRecord)]


# --- the normal sequence ------------------------------------------------------------------------


def test_handshake_replies_carry_what_players_read():
    s = Session()
    [connected] = s.ask(mms.Connect("NSPlayer/7.0.0.1956; {0}; Host: x", play_incarnation=0))
    assert isinstance(connected, mms.ReportConnectedEx) and connected.hr == 0
    assert connected.authen_package == ""
    [funnel_info] = s.ask(mms.FunnelInfo())
    assert isinstance(funnel_info, mms.ReportFunnelInfo) and funnel_info.client_id
    [funnel] = s.ask(mms.ConnectFunnel.for_transport("1.2.3.4", "TCP", 1037))
    assert isinstance(funnel, mms.ReportConnectedFunnel)
    [opened] = s.ask(mms.OpenFile("clip.wmv", play_incarnation=7))
    h, packets = file_packets(clip("clip.wmv"))
    assert opened == mms.ReportOpenFile(
        play_incarnation=7, open_file_id=1,
        file_attributes=mms.FileAttributes.CAN_SEEK | mms.FileAttributes.CAN_STRIDE,
        file_duration=h.duration, file_blocks=4, file_packet_size=h.packet_size,
        file_packet_count=len(packets), file_bit_rate=h.file_properties.max_bitrate,
        file_header_size=len(h.raw),
    )
    read = s.ask(mms.ReadBlock(play_incarnation=2))
    assert isinstance(read[0], mms.ReportReadBlock)
    parts = read[1:]
    assert all(isinstance(p, mms.MmsDataPacket) and p.packet_id == 2 for p in parts)
    assert b"".join(p.payload for p in parts) == h.raw  # type: ignore[union-attr]
    assert parts[-1].header_ends  # type: ignore[union-attr]
    [switched] = s.ask(mms.StreamSwitch.select(h.stream_numbers))
    assert switched == mms.ReportStreamSwitch()
    assert s.layer.phase is Phase.OPEN


def test_clip_is_paced_by_send_time_then_ended_the_way_ffmpeg_needs():
    s = Session()
    s.handshake("clip.wmv")
    media = s.state.library.open("clip.wmv")
    s.out = s.send(mms.StartPlaying(play_incarnation=9))
    first = messages(s.out)
    assert first[0] == mms.ReportStartedPlaying(play_incarnation=9)
    sent = [(0.0, p) for p in first[1:]]
    runs = s.run_timers()
    for at, out in runs:
        sent += [(at, m) for m in messages(out)]
    data = [(at, m) for at, m in sent if isinstance(m, mms.MmsDataPacket)]
    *media_packets, trailer = data
    assert [m.payload for _, m in media_packets] == list(media.packets)
    assert [m.sequence for _, m in media_packets] == list(range(len(media.packets)))
    assert {m.packet_id for _, m in data} == {9}
    for at, m in media_packets:  # each packet leaves within LEAD of its send time, never late
        due = media.offsets_ms[m.sequence] / 1000
        assert due - LEAD - 1e-9 <= at <= due + 1e-9
    # the end: 0x1E, then the one packet ffmpeg ends its read loop on
    ends = [m for _, m in sent if isinstance(m, mms.ReportEndOfStream)]
    assert ends == [mms.ReportEndOfStream(play_incarnation=9)]
    assert sent[-1][1] is trailer[1] and len(trailer[1].payload) > media.header.packet_size
    assert s.layer.play is None and s.layer.phase is Phase.OPEN
    out = s.send(mms.CloseFile())
    assert closes(out) == [CloseConnection(s.pb.client)]
    [record] = records(out)
    assert (record.record.status, record.record.transport, record.record.url) == (
        200, "MMST", "clip.wmv")


def test_udp_header_and_data_go_to_the_client_port_and_0x1e_waits():
    s = Session()
    s.handshake("clip.wmv", udp_port=7000)
    [sink] = s.pb.dataplane.sinks
    assert (sink.kind, sink.target) == ("udp", ("127.0.0.1", 7000))
    out = s.send(mms.ReadBlock())
    assert messages(out) == [mms.ReportReadBlock()] and not sink.payloads
    assert out[-1] == SetTimer("header", 0)  # the parts go once 0x11 has been written
    assert s.pb.timer("header") == []
    h, packets = file_packets(clip("clip.wmv"))
    header_parts = [mms.parse_data_packet(p) for p in sink.payloads]
    assert b"".join(p.payload for p in header_parts) == h.raw
    del sink.payloads[:]
    s.out = s.send(mms.StartPlaying(play_incarnation=4))
    assert messages(s.out) == [mms.ReportStartedPlaying(play_incarnation=4)]
    assert s.out[-1] == SetTimer("pace", 0) and not sink.payloads  # after 0x05, like the header
    runs = s.run_timers()
    data = [mms.parse_data_packet(p) for p in sink.payloads]
    assert [d.payload for d in data] == packets
    assert [d.flags for d in data] == [n & 0xFF for n in range(len(packets))]  # AFFlags counter
    last_at, last_out = runs[-1]
    assert messages(last_out) == [mms.ReportEndOfStream(play_incarnation=4)]
    assert last_at - runs[-2][0] == pytest.approx(UDP_END_DELAY)


def test_udp_is_refused_with_0x03_without_udp_ports_and_tcp_still_works():
    s = Session(udp=False)
    s.ask(mms.Connect("x"))
    [refused] = s.ask(mms.ConnectFunnel.for_transport("127.0.0.1", "UDP", 7000))
    assert isinstance(refused, mms.ReportDisconnectedFunnel) and refused.hr != 0
    assert s.layer.phase is Phase.CONNECTED
    [accepted] = s.ask(mms.ConnectFunnel.for_transport("127.0.0.1", "TCP", 1037))
    assert isinstance(accepted, mms.ReportConnectedFunnel)
    [bad] = s.ask(mms.ConnectFunnel(funnel_name="nonsense"))  # only in CONNECTED; now FUNNEL
    assert isinstance(bad, mms.ReportDisconnectedFunnel) and bad.hr == mms.HResult.UNEXPECTED


def test_stream_selection_sends_only_the_selected_payloads():
    s = Session()
    s.handshake("multi.wmv")
    h, packets = file_packets(clip("multi.wmv"))
    assert s.ask(mms.StreamSwitch.select({1: 2, 2: 0, 3: 2, 4: 0})) == [mms.ReportStreamSwitch()]
    s.out = s.send(mms.StartPlaying())
    got = messages(s.out)[1:]
    for _, out in s.run_timers():
        got += messages(out)
    data = [m for m in got if isinstance(m, mms.MmsDataPacket)][:-1]
    expected = filtered(packets, {2, 4}, h.packet_size)
    assert [d.payload for d in data] == expected
    assert len(expected) < len(packets)  # empty packets are not sent at all
    # LocationId stays the packet's number in the file
    numbers = [i for i, p in enumerate(packets) if asf.filter_streams(p, frozenset({2, 4}),
                                                                     h.packet_size)]
    assert [d.sequence for d in data] == numbers
    [record] = records(s.send(mms.CloseFile()))
    assert record.record.variant == "2,4"


@pytest.mark.parametrize("entries", [(), ((9, 0),), ((1, 2), (2, 2), (3, 2), (4, 2))],
                         ids=["none", "unknown-stream", "all-off"])
def test_bad_stream_selection_is_refused_and_the_session_goes_on(entries):
    s = Session()
    s.handshake("multi.wmv")
    cmd = mms.StreamSwitch(tuple(mms.StreamSwitchEntry(d, t) for d, t in entries))
    [reply] = s.ask(cmd)
    assert reply == mms.ReportStreamSwitch(hr=mms.HResult.INVALID_ARGUMENT)
    assert s.layer.phase is Phase.OPEN


def test_stop_answers_0x1e_and_start_can_begin_at_a_packet():
    s = Session()
    s.handshake("clip.wmv")
    s.send(mms.StartPlaying(play_incarnation=4))
    out = s.send(mms.StopPlaying())
    assert messages(out) == [mms.ReportEndOfStream(play_incarnation=4)]
    assert CancelTimer("pace") in out and s.layer.play is None
    got = messages(s.send(mms.StartPlaying(play_incarnation=6, location_id=20)))
    assert got[0] == mms.ReportStartedPlaying(play_incarnation=6)
    assert got[1].sequence == 20 and got[1].packet_id == 6  # type: ignore[union-attr]
    # a start position in seconds lands on the key frame at or before it
    s.send(mms.StopPlaying())
    media = s.state.library.open("clip.wmv")
    got = messages(s.send(mms.StartPlaying(play_incarnation=7, position=1.5)))
    first = got[1].sequence  # type: ignore[union-attr]
    assert first in media.key_packets and media.offsets_ms[first] <= 1500


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "wrong", "reply_type"),
    [
        ((), mms.OpenFile("clip.wmv"), mms.ReportOpenFile),
        ((), mms.StartPlaying(), mms.ReportStartedPlaying),
        ((mms.Connect("x"),), mms.Connect("x"), mms.ReportConnectedEx),
        ((mms.Connect("x"),), mms.ReadBlock(), mms.ReportReadBlock),
        ((mms.Connect("x"),), mms.OpenFile("clip.wmv"), mms.ReportOpenFile),
        ((mms.Connect("x"), mms.ConnectFunnel.for_transport("a", "TCP", 1)), mms.StreamSwitch(),
         mms.ReportStreamSwitch),
    ],
    ids=["open-first", "play-first", "connect-twice", "header-before-open", "open-before-funnel",
         "switch-before-open"],
)
def test_out_of_order_gets_its_reply_with_an_error_and_a_lingering_close(before, wrong, reply_type):
    s = Session()
    for cmd in before:
        s.send(cmd)
    out = s.send(wrong)
    [reply] = messages(out)
    assert isinstance(reply, reply_type) and reply.hr == mms.HResult.UNEXPECTED
    if isinstance(reply, mms.ReportOpenFile):
        assert reply.open_file_id == 0  # what VLC reads instead of hr
    assert closes(out) == [CloseConnection(s.pb.client, drain=True)]
    assert [r.record.status for r in records(out)] == [400]
    assert s.state.active == 0
    assert s.pb.client_sends(mms.build_command(mms.Connect("x"), sequence=9)) == []


def test_every_phase_accepts_close_file_and_keepalives():
    for phase, accepted in ACCEPTS.items():
        if phase not in (Phase.START, Phase.CLOSED):
            assert {mms.CloseFile, mms.Pong, mms.Logging} <= accepted


@pytest.mark.parametrize(
    "data",
    [
        b"GET / HTTP/1.0\r\n\r\n",
        b"\x01\x00\x00\x00\xce\xfa\x0b\xb0\xff\xff\xff\x7fMMS " + bytes(24),  # absurd length
        b"\x01\x00\x00\x00\xce\xfa\x0b\xb0\x08\x00\x00\x00MMS " + bytes(24),  # shorter than header
        mms.build_data_packet(0, 4, 0, b"x" * 10),  # players never send data packets
        mms.build_command(mms.ReportOpenFile(), sequence=0),  # a server's message
        mms.build_command(mms.Connect("x"), sequence=0)[:20] + b"ZZZZ" + bytes(40),  # bad seal
    ],
    ids=["http", "absurd-length", "short-length", "data-packet", "server-message", "bad-seal"],
)
def test_garbage_gets_a_lingering_close_and_one_record(data):
    s = Session()
    out = s.pb.client_sends(data)
    assert closes(out) == [CloseConnection(s.pb.client, drain=True)]
    assert [r.record.status for r in records(out)] == [400]
    assert any(isinstance(c, Log) for c in out)
    assert s.pb.closed(s.pb.client) == []  # the record is not written twice


def test_a_truncated_command_waits_then_the_close_is_clean():
    s = Session()
    s.send(mms.Connect("x"))
    state = s.state
    assert state.active == 1
    whole = mms.build_command(mms.FunnelInfo(), sequence=1)
    assert s.pb.client_sends(whole[:30]) == []
    out = s.pb.closed(s.pb.client)
    assert [r.record.status for r in records(out)] == [200] and state.active == 0


@settings(deadline=None, max_examples=200, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chunks=st.lists(st.binary(max_size=300), max_size=6))
def test_arbitrary_bytes_never_crash_the_layer(chunks):
    s = Session()
    good = mms.build_command(mms.Connect("x"), sequence=0)
    for chunk in [good[: len(chunks)], *chunks]:
        out = s.pb.client_sends(chunk)
        assert not any(isinstance(c, Log) and c.level == "ERROR" for c in out)
    out = s.pb.closed(s.pb.client)
    assert s.state.active == 0
    emitted = [c for _, o in s.pb.history for c in o if isinstance(c, EmitRecord)]
    assert len(emitted) == 1


@pytest.mark.parametrize(
    ("name", "hr", "status"),
    [
        ("nothere.wmv", mms.HResult.FILE_NOT_FOUND, 404),
        ("../clip.wmv", mms.HResult.FILE_NOT_FOUND, 404),
        ("/etc/passwd", mms.HResult.FILE_NOT_FOUND, 404),
        ("notes.txt", mms.HResult.FILE_NOT_FOUND, 404),
        ("live", mms.HResult.FILE_NOT_FOUND, 404),
        ("bad.wmv", mms.HResult.UNEXPECTED, 415),
    ],
)
def test_a_file_that_cannot_be_served_gets_an_error_0x06_and_a_close(name, hr, status):
    s = Session()
    s.ask(mms.Connect("x"))
    s.ask(mms.ConnectFunnel.for_transport("127.0.0.1", "TCP", 1))
    out = s.send(mms.OpenFile(name))
    assert messages(out) == [mms.ReportOpenFile(hr=hr, open_file_id=0)]
    assert closes(out) == [CloseConnection(s.pb.client, drain=True)]
    assert [r.record.status for r in records(out)] == [status]


def test_names_are_url_paths():
    library = MediaLibrary(media_root())
    assert library.resolve("live/clip.wmv")[1] is True
    assert library.resolve("/clip.wmv?x=1") == (media_root().resolve() / "clip.wmv", False)
    assert library.resolve("cl%69p.wmv")[0].name == "clip.wmv"
    assert library.resolve("live%2Fclip.wmv")[1] is True
    with pytest.raises(LookupError):
        library.resolve("live/../../clip.wmv")


def test_a_bug_in_the_layer_closes_the_session_and_frees_its_slot(monkeypatch):
    s = Session(OriginState(MediaLibrary(media_root()), max_sessions=1))
    s.handshake("clip.wmv")

    def boom(name: str) -> MediaFile:
        raise RuntimeError("boom")

    monkeypatch.setattr(s.state.library, "open", boom)
    s.layer.phase = Phase.FUNNEL
    # the driver logs what a layer raises and then calls its abort (SessionDriver._layer_failed)
    with pytest.raises(RuntimeError, match="boom"):
        s.send(mms.OpenFile("clip.wmv"))
    out = s.layer.abort("internal error")
    assert closes(out) == [CloseConnection(s.pb.client, abort=True)]
    assert [(r.record.status, r.record.reason) for r in records(out)] == [(500, "internal error")]
    assert s.state.active == 0


# --- session limit, authentication, keep-alives -------------------------------------------------


def test_max_sessions_refuses_the_next_connect_until_one_leaves():
    state = OriginState(MediaLibrary(media_root()), max_sessions=2)
    one, two, three = Session(state), Session(state), Session(state)
    assert one.ask(mms.Connect("x"))[0].hr == 0  # type: ignore[union-attr]
    assert two.ask(mms.Connect("x"))[0].hr == 0  # type: ignore[union-attr]
    out = three.send(mms.Connect("x"))
    assert messages(out) == [mms.ReportConnectedEx(hr=mms.HResult.TOO_MANY_SESSIONS)]
    assert closes(out) == [CloseConnection(three.pb.client, drain=True)]
    assert [r.record.status for r in records(out)] == [453]
    one.pb.closed(one.pb.client)
    four = Session(state)
    assert four.ask(mms.Connect("x"))[0].hr == 0  # type: ignore[union-attr]
    assert state.active == 2


def auth_session() -> Session:
    s = Session(OriginState(MediaLibrary(media_root()), credentials=("alice", "s3cret")))
    [connected] = s.ask(mms.Connect("x"))
    assert connected.authen_package == "BASIC"  # type: ignore[union-attr]
    s.ask(mms.ConnectFunnel.for_transport("127.0.0.1", "TCP", 1))
    return s


def test_basic_authentication_challenge_and_response():
    s = auth_session()
    [challenge] = s.ask(mms.OpenFile("clip.wmv", play_incarnation=3))
    assert isinstance(challenge, mms.SecurityChallenge) and challenge.play_incarnation == 3
    assert challenge.token == 'realm="mediacache"\x00'.encode("utf-16-le")
    assert s.layer.phase is Phase.CHALLENGED
    # a wrong password: challenged again, with a new cookie
    [again] = s.ask(mms.SecurityResponse(basic_token("alice", "nope"), cookie=challenge.cookie))
    assert isinstance(again, mms.SecurityChallenge) and again.cookie != challenge.cookie
    # the right one, but the old cookie: not an answer to this challenge
    [third] = s.ask(mms.SecurityResponse(basic_token("alice", "s3cret"), cookie=challenge.cookie))
    assert isinstance(third, mms.SecurityChallenge)
    [opened] = s.ask(mms.SecurityResponse(b"Basic " + basic_token("alice", "s3cret"),
                                          play_incarnation=5, cookie=third.cookie))
    assert isinstance(opened, mms.ReportOpenFile) and opened.hr == 0 and opened.open_file_id == 1
    assert opened.play_incarnation == 5 and s.layer.phase is Phase.OPEN


def test_credentials_sent_with_open_file_need_no_challenge():
    s = auth_session()
    [opened] = s.ask(mms.OpenFile("clip.wmv", token_data=basic_token("alice", "s3cret")))
    assert isinstance(opened, mms.ReportOpenFile) and opened.hr == 0


def test_three_wrong_answers_are_access_denied():
    s = auth_session()
    [challenge] = s.ask(mms.OpenFile("clip.wmv"))
    out: list[Command] = []
    for _ in range(3):
        cookie = challenge.cookie  # type: ignore[union-attr]
        out = s.send(mms.SecurityResponse(base64.b64encode(b"alice:x") + b"\0", cookie=cookie))
        if closes(out):
            break
        [challenge] = messages(out)
    assert messages(out) == [mms.ReportOpenFile(hr=mms.HResult.ACCESS_DENIED, open_file_id=0)]
    assert [r.record.status for r in records(out)] == [401]


def test_an_unsolicited_pong_is_echoed_once_and_its_answer_is_not():
    s = Session()
    s.ask(mms.Connect("x"))
    assert s.ask(mms.Pong(1, 0x100FFFF)) == [mms.Ping(1, 0x100FFFF)]
    assert s.ask(mms.Pong(1, 0x100FFFF)) == []  # the player's answer to our Ping
    assert s.ask(mms.Pong()) == [mms.Ping()]


def test_a_silent_player_is_pinged_then_dropped():
    s = Session()
    s.ask(mms.Connect("x"))
    timeout = WmtConfig().session_timeout
    assert SetTimer("idle", timeout / 2) in s.out
    s.pb.clock.now += timeout / 2
    out = s.pb.timer("idle")
    assert messages(out) == [mms.Ping()] and SetTimer("idle", timeout / 2) in out
    s.pb.clock.now += timeout / 2
    out = s.pb.timer("idle")
    assert closes(out) and [r.record.status for r in records(out)] == [408]


def test_a_full_send_buffer_holds_the_playout():
    s = Session()
    s.handshake("clip.wmv")
    s.pb.dataplane.writable = False
    out = s.send(mms.StartPlaying())
    assert messages(out) == [mms.ReportStartedPlaying()]
    assert SetTimer("pace", 0.05) in out
    s.pb.dataplane.writable = True
    s.pb.clock.now += 0.05
    assert any(isinstance(m, mms.MmsDataPacket) for m in messages(s.pb.timer("pace")))


# --- live -------------------------------------------------------------------------------------


def test_live_viewers_share_one_clock_join_at_a_key_frame_and_loop_forward():
    state = OriginState(MediaLibrary(media_root()))
    first = Session(state)
    first.handshake("live/clip.wmv")
    opened_media = state.library.open("live/clip.wmv")
    assert opened_media.live and asf.parse_asf_header(opened_media.header_bytes).is_broadcast
    start = messages(first.send(mms.StartPlaying()))
    assert start[1].sequence == 0  # type: ignore[union-attr]  # the broadcast starts with it
    second = Session(state)
    second.pb.clock.now = first.pb.clock.now + 1.0  # joins 1 s later, on the same clock
    second.handshake("live/clip.wmv")
    got = messages(second.send(mms.StartPlaying()))
    data = [m for m in got if isinstance(m, mms.MmsDataPacket)]
    joined = data[0].sequence
    media = opened_media
    assert joined in media.key_packets and 0 < media.offsets_ms[joined] <= 1000
    assert media.offsets_ms[data[-1].sequence] <= 1000 + LEAD * 1000  # burst up to now only
    # one loop later the same packets come with times moved on by the period
    third = Session(state)
    third.pb.clock.now = first.pb.clock.now + media.period_ms / 1000 + 1.0
    third.handshake("live/clip.wmv")
    later = [m for m in messages(third.send(mms.StartPlaying()))
             if isinstance(m, mms.MmsDataPacket)]
    n = len(media.packets)
    assert later[0].sequence == joined + n  # LocationId counts a virtual, endless file
    a = asf.parse_data_packet(data[0].payload)
    b = asf.parse_data_packet(later[0].payload)
    assert b.send_time == a.send_time + media.period_ms
    assert [p.presentation_time for p in b.payloads] == [
        p.presentation_time + media.period_ms for p in a.payloads]  # type: ignore[operator]


def test_live_0x06_says_broadcast_without_size():
    s = Session()
    opened = s.handshake("live/clip.wmv")
    assert opened.is_broadcast and opened.file_packet_count == 0 and opened.file_duration == 0


# --- pieces -------------------------------------------------------------------------------------


def test_shift_times_moves_send_and_presentation_times_only():
    _, packets = file_packets(clip("multi.wmv"))
    for packet in packets:
        moved = asf.shift_times(packet, 123_456)
        a, b = asf.parse_data_packet(packet), asf.parse_data_packet(moved)
        assert b.send_time == a.send_time + 123_456
        for x, y in zip(a.payloads, b.payloads, strict=True):
            assert y.presentation_time == x.presentation_time + 123_456  # type: ignore[operator]
            assert (y.data, y.stream_number, y.media_object_number) == (
                x.data, x.stream_number, x.media_object_number)
    assert asf.shift_times(packets[0], 0) is packets[0]


def test_the_wmt_format_is_registered_with_its_origin():
    from mediacache.plugins import load_plugins

    host = load_plugins()
    spec = host.registry["wmt"]
    assert spec.protocols == ("MMS", "MMST", "MMSU") and spec.has_reference_origin
    assert (spec.defaults.listen, spec.defaults.origin_port, spec.defaults.udp_ports) == (
        "0.0.0.0:1755", 1755, "1024-5000")
    assert not [f for f in host.failures if "wmt" in str(f)]
    shown = subprocess.run([sys.executable, "-m", "mediacache.cli", "plugins"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "wmt 0.1.0" in shown and "protocols: MMS, MMST, MMSU" in shown
