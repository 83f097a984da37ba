"""The reference origin on the core's server, over real sockets, with a scripted MMS player.

The player (:class:`mediacache_wmt.testing.MmsClient`) shows what ffmpeg and VLC hide: LocationIds,
send times, ``hr`` values, stream payloads, and the authentication exchange neither implements.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest
from wmt_origin_env import by_stream, clip, file_packets, filtered, have, media_root

from mediacache.testing import peers
from mediacache.testing.origin import OriginThread
from mediacache_wmt.origin import basic_token
from mediacache_wmt.testing import MmsClient, Received, connected
from mediacache_wmt.wire import asf, mms

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg to make the clips")


@pytest.fixture
def origin():
    with OriginThread.loopback("wmt", media_root(), scheme="mmst") as o:
        yield o
        assert o.wait_idle(), "a session outlived its client"


def test_mmst_play_delivers_the_file_in_real_time(origin):
    h, packets = file_packets(clip("clip.wmv"))
    with connected(origin) as c:
        c.handshake("clip.wmv")
        assert c.read_header() == h.raw
        started = time.monotonic()
        got = c.play()
        took = time.monotonic() - started
        assert [p.payload for p in got.packets] == packets
        assert got.end == mms.ReportEndOfStream(play_incarnation=5)
        span = (asf.parse_data_packet(packets[-1]).send_time
                - asf.parse_data_packet(packets[0]).send_time) / 1000
        assert span - 0.1 <= took <= span + 1.0  # paced by send time, not as fast as possible
        c.send(mms.CloseFile())
        assert c.closed()
    [record] = origin.wait_records(1)
    assert (record.status, record.transport, record.url) == (200, "MMST", "clip.wmv")
    assert record.bytes_to_client > sum(map(len, packets))


def test_mmsu_play_sends_header_and_data_over_udp(origin):
    h, packets = file_packets(clip("clip.wmv"))
    with connected(origin, udp=True) as c:
        c.handshake("clip.wmv")
        assert c.read_header() == h.raw
        got = c.play()
        assert [p.payload for p in got.packets] == packets
        assert got.end is not None
    assert origin.wait_records(1)[0].transport == "MMSU"


def test_udp_is_refused_by_an_origin_without_udp_ports():
    with (
        OriginThread.loopback("wmt", media_root(), udp=False, scheme="mmst") as o,
        connected(o, udp=True) as c,
    ):
        c.connect()
        refused = c.funnel()
        assert isinstance(refused, mms.ReportDisconnectedFunnel) and refused.hr != 0
        # the player may fall back to TCP on the same connection
        accepted = c.request(mms.ConnectFunnel.for_transport("127.0.0.1", "TCP", 1037),
                             mms.ReportConnectedFunnel)
        assert accepted.hr == 0
        assert isinstance(c.open("clip.wmv"), mms.ReportOpenFile)


@pytest.mark.peers
@pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")
def test_intelligent_streaming_sends_only_the_selected_streams(origin, tmp_path):
    h, packets = file_packets(clip("multi.wmv"))
    with connected(origin) as c:
        c.handshake("multi.wmv")
        header = c.read_header()
        c.select({2, 4}, h.stream_numbers)
        got = c.play()
    assert got.stream_numbers(h.packet_size) == {2, 4}
    assert got.asf_packets(h.packet_size) == filtered(packets, {2, 4}, h.packet_size)
    assert origin.wait_records(1)[0].variant == "2,4"
    # what arrived is a playable file whose streams 2 and 4 are the file's, frame for frame
    variant = tmp_path / "variant.wmv"
    variant.write_bytes(header + b"".join(got.asf_packets(h.packet_size)))
    ours, theirs = by_stream(peers.ffmpeg_framemd5_file(variant)), by_stream(
        peers.ffmpeg_framemd5_file(clip("multi.wmv")))
    assert ours[1] == theirs[1] and ours[3] == theirs[3]  # stream numbers 2 and 4
    assert 0 not in ours or not ours[0]


def live(origin: OriginThread, seconds: float, out: dict[str, Received], key: str) -> None:
    with connected(origin) as c:
        c.handshake("live/clip.wmv")
        c.read_header()
        out[key] = c.play(seconds=seconds)


def test_live_viewers_joining_a_second_apart_share_one_broadcast(origin):
    got: dict[str, Received] = {}
    first = threading.Thread(target=live, args=(origin, 3.0, got, "first"))
    first.start()
    time.sleep(1.0)
    live(origin, 2.0, got, "second")
    first.join(15)
    a, b = got["first"].packets, got["second"].packets
    assert a and b
    assert got["first"].end is None and got["second"].end is None  # a broadcast does not end
    a_by_location = {p.sequence: p.payload for p in a}
    # the second viewer did not start at the beginning: it joined "now", near a key frame
    send_a0 = asf.parse_data_packet(a[0].payload).send_time
    send_b0 = asf.parse_data_packet(b[0].payload).send_time
    assert b[0].sequence > a[0].sequence
    assert send_b0 - send_a0 >= 400  # 1 s later, less at most one key-frame interval (0.48 s)
    # one shared clock: where both got a packet, it is the same packet
    common = [p for p in b if p.sequence in a_by_location]
    assert len(common) > 10
    assert all(a_by_location[p.sequence] == p.payload for p in common)


def test_live_loops_with_times_moving_forward(origin):
    _, packets = file_packets(clip("clip.wmv"))
    got: dict[str, Received] = {}
    live(origin, 4.5, got, "one")  # more than one 3 s pass of the clip
    received = got["one"].packets
    locations = [p.sequence for p in received]
    assert locations == list(range(locations[0], locations[0] + len(locations)))
    assert locations[-1] >= len(packets)  # crossed into the second pass
    times = [asf.parse_data_packet(p.payload).send_time for p in received]
    assert times == sorted(times) and times[-1] > 3046
    for p in received:
        i = p.sequence % len(packets)
        moved = asf.shift_times(packets[i], (p.sequence // len(packets)) * 3046)
        assert p.payload == moved


def test_garbage_and_out_of_order_are_closed_and_the_origin_keeps_serving(origin):
    bad_inputs = [
        b"\x00" * 64,
        b"GET /clip.wmv HTTP/1.0\r\n\r\n",
        b"\x01\x00\x00\x00\xce\xfa\x0b\xb0\xff\xff\xff\x7fMMS " + bytes(24),
        mms.build_data_packet(0, 4, 0, bytes(100)),
    ]
    for data in bad_inputs:
        with connected(origin) as c:
            c.send_raw(data)
            assert c.closed(), data
    with connected(origin) as c:  # out of order: the reply it would get, with an error
        c.send(mms.StartPlaying())
        reply = c.command()
        assert isinstance(reply, mms.ReportStartedPlaying) and reply.hr == mms.HResult.UNEXPECTED
        assert c.closed()
    with connected(origin) as c:  # truncated: half a command, then the player goes
        c.send_raw(mms.build_command(mms.Connect("x"), sequence=0)[:30])
    with connected(origin) as c:  # a file that is not there
        c.connect()
        c.funnel()
        reply = c.open("missing.wmv")
        assert reply == mms.ReportOpenFile(hr=mms.HResult.FILE_NOT_FOUND, open_file_id=0)
        assert c.closed()
    assert origin.wait_idle()
    with connected(origin) as c:  # still serving
        c.handshake("clip.wmv")
        assert c.read_header() == file_packets(clip("clip.wmv"))[0].raw
    statuses = sorted(r.status for r in origin.wait_records(8))
    assert statuses == [200, 200, 400, 400, 400, 400, 400, 404]


def test_max_sessions_refuses_the_next_player_with_an_mms_error():
    with OriginThread.loopback("wmt", media_root(), max_sessions=1, scheme="mmst") as o:
        with connected(o) as first:
            first.connect()
            with connected(o) as second:
                refused = second.connect()
                assert refused.hr == mms.HResult.TOO_MANY_SESSIONS
                assert second.closed()
        assert o.wait_idle()
        with connected(o) as third:  # the slot came back when the first player left
            assert third.connect().hr == 0
        assert sorted(r.status for r in o.wait_records(3)) == [200, 200, 453]


def test_basic_authentication_over_the_wire():
    with OriginThread.loopback("wmt", media_root(), auth="alice:s3cret", scheme="mmst") as o:
        with connected(o) as c:
            assert c.connect().authen_package == "BASIC"
            c.funnel()
            challenge = c.open("clip.wmv")
            assert isinstance(challenge, mms.SecurityChallenge)
            opened = c.request(
                mms.SecurityResponse(basic_token("alice", "s3cret"), cookie=challenge.cookie),
                mms.ReportOpenFile,
            )
            assert opened.hr == 0
            c.read_header()
            assert len(c.play().packets) == len(file_packets(clip("clip.wmv"))[1])
        with connected(o) as c:
            c.connect()
            c.funnel()
            reply = c.open("clip.wmv")
            for _ in range(3):
                assert isinstance(reply, mms.SecurityChallenge)
                c.send(mms.SecurityResponse(basic_token("alice", "guess"), cookie=reply.cookie))
                reply = c.command()
                if isinstance(reply, mms.ReportOpenFile):
                    break
            assert reply == mms.ReportOpenFile(hr=mms.HResult.ACCESS_DENIED, open_file_id=0)
            assert c.closed()
        assert sorted(r.status for r in o.wait_records(2)) == [200, 401]


def test_keepalive_is_echoed_once(origin):
    with connected(origin) as c:
        c.connect()
        c.send(mms.Pong(1, 0x0100FFFF))
        assert c.command() == mms.Ping(1, 0x0100FFFF)
        c.send(mms.Pong(1, 0x0100FFFF))  # answering our Ping: no echo, no loop
        with pytest.raises(TimeoutError):
            c.recv(timeout=0.5)


def test_stop_then_restart_from_a_packet(origin):
    with connected(origin) as c:
        c.handshake("clip.wmv")
        c.read_header()
        c.start(packet_id=4)
        time.sleep(0.5)
        c.send(mms.StopPlaying())
        got = c.collect(4)
        assert got.end == mms.ReportEndOfStream(play_incarnation=4)
        again = c.play(packet_id=6, location_id=30)
        assert again.packets[0].sequence == 30 and again.end is not None
        assert {p.packet_id for p in again.packets} == {6}


def test_players_closing_mid_stream_leave_nothing_behind(origin):
    for _ in range(3):
        c = MmsClient("127.0.0.1", origin.port)
        c.handshake("multi.wmv")
        c.read_header()
        c.start()
        c.sock.shutdown(socket.SHUT_RDWR)
        c.close()
    assert origin.wait_idle()
    assert len(origin.wait_records(3)) == 3
