"""The reference Real origin on the core's server, over loopback, with a raw Real RTSP client.

Sockets, the playout scheduler and the shared UDP sockets are real here; the client is
:class:`~real_origin_support.RealClient`, which shows what a player would hide (status codes,
set ids, ASM rules, timestamps). The player tests are in test_real_origin_players.py.
"""

from __future__ import annotations

import base64
import collections
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import free_port, make_clip
from mediacache.testing.proxy import free_udp_range
from mediacache_realmedia.testing import RealClient, ffmpeg_rm, surestream_clip
from mediacache_realmedia.wire.rmf import parse_rm

pytestmark = pytest.mark.realtime


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (it makes the clips)")
    d = tmp_path_factory.mktemp("root")
    make_clip(d / "a.rm", 3, kind="rv20_ac3")
    (d / "live").mkdir()
    ffmpeg_rm(d / "live" / "l.rm", "-c:v", "rv10", "-g", "5", "-c:a", "real_144", "-ar", "8000",
              "-ac", "1")  # fmt: skip
    surestream_clip(d / "sure.rm", tmp_path_factory.mktemp("work"))
    return d


@pytest.fixture(scope="module")
def origin(root: Path):  # type: ignore[no-untyped-def]
    with OriginThread.loopback("realmedia", root) as o:
        yield o


def test_tcp_session_delivers_every_packet_in_real_time(origin: OriginThread, root: Path) -> None:
    rm = parse_rm((root / "a.rm").read_bytes())
    with RealClient(origin.port) as c:
        c.start("a.rm")
        t0 = time.monotonic()
        got = c.collect(10, until_ends=2)
        took = time.monotonic() - t0
        assert c.request("TEARDOWN", c.url("a.rm")).status == 200
    assert 2.5 < took < 5  # paced by the 3 s clip's timestamps, not sent at once
    by_channel = collections.defaultdict(list)
    for channel, p in got.data:
        assert p.set_id == channel  # ffmpeg routes by set id, GStreamer by channel
        by_channel[channel].append(p)
    for stream in (0, 1):
        packets = by_channel[stream]
        assert [p.payload for p in packets] == [p.payload for p in rm.packets if p.stream == stream]
        assert [p.timestamp for p in packets] == [
            p.timestamp_ms for p in rm.packets if p.stream == stream
        ]
        assert [p.seq for p in packets] == list(range(len(packets)))
    assert sorted((e.stream_id, e.seq) for e in got.ends) == [
        (0, len(by_channel[0])),
        (1, len(by_channel[1])),
    ]


def test_udp_session_from_the_shared_sockets(origin: OriginThread, root: Path) -> None:
    rm = parse_rm((root / "a.rm").read_bytes())
    with RealClient(origin.port) as c:
        c.options()
        c.request("DESCRIBE", c.url("a.rm"))
        ports = []
        for n in (0, 1):
            r = c.setup("a.rm", n, f"x-pn-tng/udp;client_port={c.udp_port()}")
            assert r.status == 200
            ports.append(int(r.headers["Transport"].rsplit("server_port=", 1)[1]))
        pool = origin.server.services["realmedia"].pool
        assert ports[0] == ports[1] and ports[0] in [pair.ports[0] for pair in pool.pairs]
        c.subscribe("a.rm", "stream=0;rule=0,stream=0;rule=1,stream=1;rule=0,stream=1;rule=1")
        c.play("a.rm")
        got = c.collect(10, until_ends=2)
    assert len(got.data) == len(rm.packets)
    assert {p.set_id for _, p in got.data} == {0, 1}
    assert not [p for ch, p in got.packets if ch != -1]  # nothing interleaved


def test_no_data_before_subscribe(origin: OriginThread) -> None:
    with RealClient(origin.port) as c:
        c.options()
        c.setup("a.rm", 0)
        assert c.play("a.rm").status == 200
        assert not c.collect(0.5).packets
        c.subscribe("a.rm", "stream=0;rule=0,stream=0;rule=1")
        assert c.collect(1.0).data


def test_surestream_low_rule_only(origin: OriginThread, root: Path) -> None:
    """A client subscribing the low rate's pair of rules gets only those packets."""
    rm = parse_rm((root / "sure.rm").read_bytes())
    with RealClient(origin.port) as c:
        c.options()
        sdp = c.request("DESCRIBE", c.url("sure.rm")).body.decode()
        assert sdp.count("AverageBandwidth=") == 6  # two rates of video, one of audio
        c.start("sure.rm", subscribe="stream=0;rule=0,stream=0;rule=1")
        got = c.collect(10, until_ends=2)
        session = c.session
    low = [p for p in rm.packets if p.stream == 0 and p.asm_rule in (0, 1)]
    assert [(p.asm_rule, p.payload) for _, p in got.data] == [(p.asm_rule, p.payload) for p in low]
    record = origin.wait_record(lambda r: r.url.endswith("/sure.rm") and r.session == session)
    assert record is not None and record.variant == "stream=0;rule=0,stream=0;rule=1"


def test_surestream_switch_while_playing(origin: OriginThread) -> None:
    with RealClient(origin.port) as c:
        c.start("sure.rm", subscribe="stream=0;rule=2,stream=0;rule=3")
        c.collect(1.0)
        c.request("SET_PARAMETER", c.url("sure.rm"), [
            ("Unsubscribe", "stream=0;rule=2,stream=0;rule=3"),
            ("Subscribe", "stream=0;rule=0,stream=0;rule=1"),
        ])  # fmt: skip
        n = len(c.received.data)
        got = c.collect(10, until_ends=2)
    rules = [p.asm_rule for _, p in got.data]
    assert set(rules[:n]) <= {2, 3} and set(rules[n + 2 :]) <= {0, 1} and set(rules[n + 2 :])


def test_live_viewers_join_now(origin: OriginThread, root: Path) -> None:
    """Two viewers one second apart: the second starts about a second in, at a key frame."""
    with RealClient(origin.port) as a, RealClient(origin.port) as b:
        a.options()
        assert "a=range:npt=now-" in a.request("DESCRIBE", a.url("live/l.rm")).body.decode()
        a.start("live/l.rm")
        a.collect(1.0)
        b.start("live/l.rm")
        b.collect(1.5)
        a.collect(0.2)
        assert b.play("live/l.rm").headers["Range"] == "npt=now-"  # PLAY again: rejoin now
    first_a = a.received.data[0][1].timestamp
    first_b = b.received.data[0][1].timestamp
    video_b = [p for ch, p in b.received.data if ch == 0]
    assert video_b[0].keyframe
    assert first_b - first_a >= 500  # not the beginning (key frames every 5 frames, 1/3 s)
    a_video_ts = [p.timestamp for ch, p in a.received.data if ch == 0]
    assert video_b[0].timestamp in a_video_ts  # one clock: b joined a's timeline


def test_live_loops_with_time_going_forward(root: Path) -> None:
    with (
        OriginThread.loopback("realmedia", root, udp=False) as origin,
        RealClient(origin.port) as c,
    ):
        c.start("live/l.rm", subscribe="stream=0;rule=0,stream=0;rule=1")
        got = c.collect(4.0)
    ts = [p.timestamp for _, p in got.data]
    assert ts == sorted(ts) and ts[-1] > 3000  # past the end of the 3 s file: looped
    assert [p.seq for _, p in got.data] == list(range(len(ts)))
    assert not got.ends


def test_max_sessions(root: Path) -> None:
    with OriginThread.loopback("realmedia", root, max_sessions=1) as origin:
        with RealClient(origin.port) as a:
            a.options()
            assert a.setup("a.rm", 0).status == 200
            with RealClient(origin.port) as b:
                b.options()
                assert b.setup("a.rm", 0).status == 453
        deadline = time.monotonic() + 5
        while origin.session_count() and time.monotonic() < deadline:
            time.sleep(0.05)  # a's and b's connections are gone: a's slot is free
        with RealClient(origin.port) as c:
            c.options()
            assert c.setup("a.rm", 0).status == 200


def test_auth_basic(root: Path) -> None:
    with (
        OriginThread.loopback("realmedia", root, auth="user:pa:ss") as origin,
        RealClient(origin.port) as c,
    ):
        c.options()
        r = c.request("DESCRIBE", c.url("a.rm"))
        assert r.status == 401
        assert [v.split()[0] for v in r.headers.get_all("WWW-Authenticate")] == [
            "Digest", "Basic"
        ]  # fmt: skip
        wrong = [("Authorization", "Basic " + base64.b64encode(b"user:nope").decode())]
        assert c.request("DESCRIBE", c.url("a.rm"), wrong).status == 401
        good = [("Authorization", "Basic " + base64.b64encode(b"user:pa:ss").decode())]
        c.start("a.rm", auth=good)
        assert c.collect(1.0).data


def test_garbage_and_errors_end_cleanly(origin: OriginThread) -> None:
    with RealClient(origin.port) as c:
        c.send_raw(b"\x16\x03\x01\x02\x00garbage that is not RTSP\r\n\r\n")
        r = c.response()
        assert r.status == 400
        assert c.collect(3.0) is not None and c.closed()
    with RealClient(origin.port) as c:  # the origin is fine
        assert c.request("FOO", c.url("a.rm")).status == 501
        assert c.request("PAUSE", c.url("a.rm")).status == 455
        assert c.request("TEARDOWN", c.url("a.rm"), [("Session", "nope")]).status == 454
        c.options()
        assert c.setup("a.rm", 0, "RTP/AVP;unicast;client_port=4000-4001").status == 461
        assert c.request("DESCRIBE", c.url("missing.rm")).status == 404
        assert c.request("GET_PARAMETER", c.url("a.rm")).status == 200
        assert c.request("SET_PARAMETER", c.url("a.rm")).status == 200


def test_every_session_is_released(root: Path) -> None:
    with OriginThread.loopback("realmedia", root) as origin:
        for _ in range(3):
            with RealClient(origin.port) as c:
                c.start("a.rm")
                c.collect(0.3)
        with RealClient(origin.port) as c:
            c.start("a.rm", udp=True)
            c.collect(0.3)
        deadline = time.monotonic() + 5
        while origin.session_count() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert origin.session_count() == 0
        assert not origin.call(lambda: origin.server.services["realmedia"].pool.watchers)
        records = origin.wait_records(4)
        assert len(records) == 4 and all(r.reason == "client closed" for r in records)


def test_cli_runs_the_origin(root: Path, tmp_path: Path) -> None:
    """``mediacache origin realmedia`` as a subprocess, stopped with SIGTERM."""
    port = free_port()
    cmd = [sys.executable, "-m", "mediacache.cli", "origin", "realmedia", "--root", str(root),
           "--listen", f"127.0.0.1:{port}", "--udp-ports", free_udp_range(2),
           "--max-sessions", "5"]  # fmt: skip
    log = tmp_path / "origin.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        with RealClient(port) as c:
            c.start("a.rm", udp=True)
            assert c.collect(1.0).data
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    assert "realmedia" in log.read_text()
