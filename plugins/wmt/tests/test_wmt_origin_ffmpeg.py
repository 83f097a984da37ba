"""Real players against the reference origin: ffmpeg's mmst client, tshark's msmms dissector.

ffmpeg reads ``mmst://`` and must get exactly the packets it reads from the file (framemd5 per
stream: stream index, size, hash); a live file plays on with time going forward; the session
limit and authentication turn it away with MMS errors it reports.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from wmt_origin_env import by_stream, clip, ffmpeg_rows, have, media_root

from mediacache.testing import peers
from mediacache.testing.origin import OriginThread
from mediacache_wmt.testing import connected

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")]


@pytest.fixture
def origin():
    with OriginThread.loopback("wmt", media_root(), scheme="mmst") as o:
        yield o
        assert o.wait_idle(), "a session outlived its client"


@pytest.fixture
def group():
    with peers.ProcessGroup() as g:
        yield g


@pytest.mark.parametrize("name", ["clip.wmv", "multi.wmv"])
def test_ffmpeg_mmst_gets_the_packets_of_the_file(origin, group, name):
    got = peers.ffmpeg_framemd5(origin.url(name), timeout=60, group=group)
    want = peers.ffmpeg_framemd5_file(clip(name))
    assert by_stream(got) == by_stream(want)
    assert len(by_stream(got)) == (2 if name == "clip.wmv" else 4)  # ffmpeg selects every stream
    [record] = origin.wait_records(1)
    assert (record.status, record.transport, record.user_agent) == (
        200, "MMST", "NSPlayer/7.0.0.1956")


def test_ffmpeg_plays_a_live_file_past_its_end_with_time_going_forward(origin, group):
    with connected(origin) as viewer:  # the broadcast is on before ffmpeg tunes in
        viewer.handshake("live/clip.wmv")
        viewer.start()
        time.sleep(1.2)
        code, rows, err = ffmpeg_rows(origin.url("live/clip.wmv"), group,
                                      output_args=["-copyts", "-t", "5"], timeout=30)
    assert code == 0, err
    # -copyts: the stream's own times (ms after the preroll), not ffmpeg's rebased ones
    video = [int(r[1]) for r in rows if r[0] == "0"]
    audio = [int(r[1]) for r in rows if r[0] == "1"]
    assert video == sorted(video) and audio == sorted(audio)
    assert video[0] >= 500  # joined the broadcast where it was, not at its beginning
    assert video[-1] >= 3046 + 1000  # and kept going past the end of the 3 s clip
    assert max(b - a for a, b in itertools.pairwise(video)) <= 200  # no jump back


def test_max_sessions_turns_ffmpeg_away_with_an_mms_error(group):
    with OriginThread.loopback("wmt", media_root(), max_sessions=1, scheme="mmst") as o:
        with connected(o) as holder:
            holder.connect()
            code, rows, err = ffmpeg_rows(o.url("clip.wmv"), group, timeout=20)
            assert code != 0 and not rows
            assert "0xc00d000f" in err.lower()  # NS_E_TOO_MANY_SESS, in ReportConnectedEX
        assert o.wait_idle()
        assert by_stream(peers.ffmpeg_framemd5(o.url("clip.wmv"), group=group)) == by_stream(
            peers.ffmpeg_framemd5_file(clip("clip.wmv")))


def test_ffmpeg_cannot_answer_the_authentication_challenge(group):
    with OriginThread.loopback("wmt", media_root(), auth="alice:s3cret", scheme="mmst") as o:
        code, rows, err = ffmpeg_rows(o.url("clip.wmv"), group, timeout=20)
        assert code != 0 and not rows
        assert "0x1a" in err  # "unexpected packet type 0x1a, expected 0x6"
        assert [r.status for r in o.wait_records(1)] == [401]


def test_ffmpeg_reports_an_unknown_file(origin, group):
    code, rows, err = ffmpeg_rows(origin.url("missing.wmv"), group, timeout=20)
    assert code != 0 and not rows and "0xc00d001a" in err.lower()


@pytest.mark.skipif(not have("tshark"), reason="needs tshark")
def test_tshark_reads_an_ffmpeg_session_without_malformed_packets(origin, group, tmp_path):
    pcap = tmp_path / "mms.pcapng"
    with peers.tshark_capture(pcap, f"tcp port {origin.port}", group=group):
        got = peers.ffmpeg_framemd5(origin.url("multi.wmv"), group=group)
    assert got
    decode = [f"tcp.port=={origin.port},msmms"]
    assert peers.tshark_malformed(pcap, decode) == 0
    summary = peers.tshark_decode(pcap, decode)
    commands = [line for line in summary.splitlines() if "MSMMS" in line and "Command:" in line]
    data = [line for line in summary.splitlines() if "MSMMS" in line and "Data:" in line]
    assert len(commands) >= 14  # 7 requests, 7 replies, 0x1E, 0x0D
    assert any("Sending media file now" in line for line in commands)
    assert len(data) >= 20  # one line per TCP segment, which holds several data packets


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mediacache origin exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"nothing listens on {port}")


def test_the_cli_runs_the_origin(group, tmp_path: Path):
    port = peers.free_port()
    log = tmp_path / "origin.log"
    with open(log, "wb") as out:
        proc = group.start(
            [sys.executable, "-m", "mediacache.cli", "origin", "wmt", "--root", str(media_root()),
             "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        wait_port(port, proc)
        got = peers.ffmpeg_framemd5(f"mmst://127.0.0.1:{port}/clip.wmv", group=group)
        assert by_stream(got) == by_stream(peers.ffmpeg_framemd5_file(clip("clip.wmv")))
    finally:
        code = group.stop(proc, sig=signal.SIGTERM, timeout=10)  # one SIGTERM: a clean exit
    text = log.read_text(errors="replace")
    assert code == 0, text
    assert "wmt 0.1.0 listening" in text and "opened clip.wmv over MMST" in text
