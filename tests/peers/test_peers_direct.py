"""The real peers work on their own, with no proxy involved.

Everything the proxy tests rely on is proven here first: the GStreamer origin (VOD, live, auth,
session limit), ffmpeg as the judge over TCP and UDP, the byte-counting relay, the test clips,
VLC as nobody, tshark's dissectors. Observed status codes are asserted, and listed in
docs/peers.md.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mediacache.testing import peers
from mediacache.testing.judge import same_packets
from mediacache.testing.peers import (
    ByteCountingRelay,
    GstRtspOrigin,
    PeerError,
    RtspConnection,
)
from mediacache.testing.pytest_plugin import requires_peer

pytestmark = [pytest.mark.peers, pytest.mark.timeout(60)]

VOD = "vod/clip.mp4"
TCP = "RTP/AVP/TCP;unicast;interleaved=0-1"


def _basic(userpass: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(userpass.encode()).decode()}


# --------------------------------------------------------------------------- GStreamer + ffmpeg


def test_vod_tcp_equals_udp(gst_origin: GstRtspOrigin) -> None:
    """PEERS.md: through the GStreamer origin, UDP and TCP give identical packet lists."""
    url = gst_origin.url(VOD)
    with ThreadPoolExecutor(2) as pool:
        tcp, udp = pool.map(
            lambda t: peers.ffmpeg_framemd5(url, transport=t, timeout=20), ["tcp", "udp"]
        )
    assert tcp, "no packets over TCP"
    assert same_packets(tcp, udp)  # per stream: the interleaving across streams is timing
    counts = Counter(stream for stream, _, _ in tcp)
    assert set(counts) == {0, 1}, counts
    assert counts[0] == 100  # 4 s at 25 fps, no B-frames
    assert gst_origin.wait_for(lambda: gst_origin.active_sessions() == 0, 5)
    assert gst_origin.sessions_total == 2
    assert len(gst_origin.requests("PLAY")) == 2
    assert len(gst_origin.requests("TEARDOWN")) == 2


def test_live_mount_serves_concurrent_joiners(gst_origin: GstRtspOrigin) -> None:
    """Several clients joining the shared live mount at once all get video (no 503)."""
    url = gst_origin.url("live")

    def play(transport: str) -> list[tuple[int, int, str]]:
        return peers.ffmpeg_framemd5(url, transport=transport, timeout=15, input_args=["-t", "2"])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(play, ["tcp", "udp", "tcp", "udp"]))
    for rows in results:
        assert {s for s, _, _ in rows} == {0}
        # ~50 frames in 2 s; fewer when a loaded machine starves the live encoder.
        assert 15 <= len(rows) <= 60, len(rows)
    assert 503 not in gst_origin.responses()
    assert gst_origin.sessions_total == 4  # the internal live holder is not reported


def test_ffprobe_packets_interrupts_a_stream_that_does_not_end(gst_origin: GstRtspOrigin) -> None:
    # a loaded machine starts GStreamer's live encoder late: ffprobe must see packets first
    rows = peers.ffprobe_packets(
        gst_origin.url("live"), timeout=6.0, extra_args=["-rtsp_transport", "tcp"]
    )
    assert len(rows) > 10
    assert {kind for kind, _, _ in rows} == {"video"}


@pytest.mark.parametrize("with_live", [False, True], ids=["vod-only", "with-live-mount"])
def test_max_sessions_answers_503(h264_clip: Path, with_live: bool) -> None:
    """GStreamer refuses session N+1 at SETUP with ``503 Service Unavailable``."""
    requires_peer("gstreamer")
    live = ("live",) if with_live else ()
    with GstRtspOrigin({"clip.mp4": h264_clip}, live=live, max_sessions=1) as origin:
        url = origin.url(VOD)
        with RtspConnection(origin.host, origin.port) as first:
            assert first.request("SETUP", f"{url}/stream=0", {"Transport": TCP}).status == 200
            with RtspConnection(origin.host, origin.port) as second:
                refused = second.request("SETUP", f"{url}/stream=0", {"Transport": TCP})
                assert (refused.status, refused.reason) == (503, "Service Unavailable")
                assert "session" not in refused.headers
                # ffmpeg reports it as "Server returned 5XX Server Error reply".
                with pytest.raises(PeerError, match="503 Service Unavailable"):
                    peers.ffmpeg_framemd5(url, transport="tcp", timeout=10)
                assert first.request("TEARDOWN", url).status == 200
                assert origin.wait_for(lambda: origin.active_sessions() == 0, 5)
                again = second.request("SETUP", f"{url}/stream=0", {"Transport": TCP})
                assert again.status == 200


def test_basic_auth(h264_clip: Path) -> None:
    """401 with a Basic challenge without or with wrong credentials; OPTIONS is not guarded."""
    requires_peer("gstreamer")
    with GstRtspOrigin({"clip.mp4": h264_clip}, live=("live",), auth="alice:s3cret") as origin:
        url = origin.url(VOD)
        with RtspConnection(origin.host, origin.port) as c:
            assert c.request("OPTIONS", url).status == 200
            bare = c.request("DESCRIBE", url)
            assert bare.status == 401
            assert bare.headers["www-authenticate"] == 'Basic realm="GStreamer RTSP Server"'
            assert c.request("DESCRIBE", url, _basic("alice:wrong")).status == 401
            ok = c.request("DESCRIBE", url, _basic("alice:s3cret"))
            assert ok.status == 200 and b"m=video" in ok.body
        with pytest.raises(PeerError, match="401 Unauthorized"):
            peers.ffmpeg_framemd5(url, transport="tcp", timeout=10, input_args=["-t", "1"])
        rows = peers.ffmpeg_framemd5(
            origin.url(VOD, credentials=True), transport="tcp", timeout=10, input_args=["-t", "1"]
        )
        assert {s for s, _, _ in rows} == {0, 1}
        live = peers.ffmpeg_framemd5(
            origin.url("live", credentials=True),
            transport="udp",
            timeout=10,
            input_args=["-t", "1"],
        )
        assert live


def test_session_of_a_vanished_client_lingers_until_timeout(h264_clip: Path) -> None:
    """A client that closes TCP without TEARDOWN keeps its session: timeout + 5 s grace."""
    requires_peer("gstreamer")
    with GstRtspOrigin({"clip.mp4": h264_clip}, live=(), session_timeout=1) as origin:
        with RtspConnection(origin.host, origin.port) as c:
            r = c.request("SETUP", f"{origin.url(VOD)}/stream=0", {"Transport": TCP})
            assert r.status == 200 and r.headers["session"].endswith(";timeout=1")
        closed_at = time.monotonic()
        assert origin.wait_for(lambda: origin.connections_open == 0, 5)
        assert origin.active_sessions() == 1
        assert origin.wait_for(lambda: origin.active_sessions() == 0, 15)
        assert time.monotonic() - closed_at > 3


def test_byte_counting_relay(gst_origin: GstRtspOrigin) -> None:
    """RTSP over TCP passes the relay unchanged, and the relay counts the origin's bytes."""
    with ByteCountingRelay(gst_origin.port) as relay:
        with ThreadPoolExecutor(2) as pool:
            rows, direct = pool.map(
                lambda u: peers.ffmpeg_framemd5(u, transport="tcp", timeout=20),
                [relay.url(VOD), gst_origin.url(VOD)],
            )
        assert rows == direct
        assert len(relay.connections) == 1
        conn = relay.connections[0]
        deadline = time.monotonic() + 5
        while conn.open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not conn.open
        media = sum(size for _, size, _ in rows)
        # RTP headers, interleaving and RTSP replies come on top of the payload.
        assert media < conn.bytes_down < media * 1.3
        assert 0 < conn.bytes_up < 2000
        assert relay.bytes_down == conn.bytes_down


# --------------------------------------------------------------------------- clips


EXPECTED_CODECS = {
    "h264_aac": ["h264", "aac"],
    "rv20_ac3": ["rv20", "ac3"],
    "rv10_real144": ["rv10", "ra_144"],
    "wmv2_wmav2": ["wmv2", "wmav2"],
    "wmv_multirate": ["wmv2", "wmv2", "wmv2", "wmav2"],
}


@pytest.mark.parametrize("kind", sorted(EXPECTED_CODECS))
def test_make_clip(kind: peers.ClipKind, tmp_path: Path) -> None:
    requires_peer("ffmpeg")
    path = peers.make_clip(seconds=3, kind=kind)
    streams = peers.ffprobe_streams(path)
    assert [s["codec_name"] for s in streams] == EXPECTED_CODECS[kind]
    assert float(streams[0]["format_duration"]) == pytest.approx(3.0, abs=0.15)
    assert peers.make_clip(seconds=3, kind=kind) == path  # cached, not made again
    copy = peers.make_clip(tmp_path / f"mine{path.suffix}", seconds=3, kind=kind)
    assert copy.read_bytes() == path.read_bytes()
    if kind == "wmv_multirate":
        per_stream = Counter[int]()
        for stream, size, _ in peers.ffmpeg_framemd5_file(path):
            per_stream[stream] += size
        assert per_stream[0] > per_stream[1] > per_stream[2]  # three distinct bit rates
    if path.suffix == ".rm":
        rows = peers.ffprobe_packets(path, timeout=20)
        assert {k for k, _, _ in rows} == {"video", "audio"}


def test_make_clip_is_safe_under_racing_workers(tmp_path: Path) -> None:
    """xdist workers asking for the same new clip make it once and all get a whole file."""
    requires_peer("ffmpeg")
    env = {**os.environ, "MEDIACACHE_TEST_CLIPS": str(tmp_path)}
    code = (
        "from mediacache.testing.peers import make_clip, ffprobe_streams;"
        "p = make_clip(seconds=3.5, kind='rv20_ac3');"
        "print(p, len(ffprobe_streams(p)))"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=30)[0].strip())
    finally:
        for p in procs:
            p.kill()
    assert len(set(outs)) == 1 and outs[0].endswith(" 2"), outs
    assert [f.name for f in tmp_path.iterdir() if not f.name.startswith(".")] == [
        Path(outs[0].split()[0]).name
    ]


# --------------------------------------------------------------------------- VLC


def test_vlc_runs_as_nobody_and_remuxes(h264_clip: Path) -> None:
    """The run_vlc machinery: setpriv to nobody, dummy interface, --sout to a .ts file."""
    requires_peer("vlc")
    result = peers.run_vlc(str(h264_clip), seconds=20)
    assert result.returncode == 0 and not result.timed_out, result.stderr
    assert result.played and result.output is not None
    assert sorted(s["codec_name"] for s in peers.ffprobe_streams(result.output)) == ["aac", "h264"]


def test_vlc_rtsp_client_needs_live555(gst_origin: GstRtspOrigin) -> None:
    """Debian's VLC 3.0 has no live555 module, so it cannot play standard RTSP at all.

    Its only RTSP clients are ``access_realrtsp`` (Real/Helix servers only) and ``satip``; both
    give up on the GStreamer origin. If a future VLC gains live555, this test checks playback.
    """
    requires_peer("vlc")
    result = peers.run_vlc(gst_origin.url(VOD), seconds=15)
    assert gst_origin.requests("OPTIONS"), "VLC never reached the origin"
    if result.played:  # pragma: no cover - not on Debian 12
        assert result.output is not None
        assert peers.ffprobe_streams(result.output)[0]["codec_name"] == "h264"
        return
    assert "only real/helix rtsp servers supported" in result.stderr
    assert "VLC is unable to open the MRL" in result.stderr
    assert not gst_origin.requests("PLAY")


# --------------------------------------------------------------------------- tshark


def test_tshark_decodes_an_rtsp_udp_session(h264_clip: Path, tmp_path: Path) -> None:
    """One ffmpeg RTSP/UDP session: tshark finds the RTSP dialogue, RTP, and nothing malformed."""
    requires_peer("tshark", "gstreamer")
    with GstRtspOrigin({"clip.mp4": h264_clip}, live=()) as origin:
        pcap = tmp_path / "session.pcapng"
        rtp_lo, _ = peers.free_port_pair()
        with peers.tshark_capture(
            pcap, f"tcp port {origin.port} or udp portrange {rtp_lo}-{rtp_lo + 9}"
        ):
            rows = peers.ffmpeg_framemd5(
                origin.url(VOD),
                transport="udp",
                timeout=20,
                input_args=["-min_port", str(rtp_lo), "-max_port", str(rtp_lo + 9)],
            )
    decode_as = [f"tcp.port=={origin.port},rtsp"]
    text = peers.tshark_decode(pcap, decode_as)
    for method in ("DESCRIBE", "SETUP", "PLAY", "TEARDOWN"):
        assert f"{method} rtsp://" in text
    to_client = f"rtp and udp.dstport >= {rtp_lo} and udp.dstport <= {rtp_lo + 9}"
    rtp = peers.tshark_decode(pcap, decode_as, display_filter=to_client)
    assert len(rtp.splitlines()) >= len(rows)
    assert peers.tshark_malformed(pcap, decode_as) == 0


# --------------------------------------------------------------------------- plumbing


def test_free_ports() -> None:
    rtp, rtcp = peers.free_port_pair()
    assert rtp % 2 == 0 and rtcp == rtp + 1
    assert 0 < peers.free_port("udp") < 65536 and 0 < peers.free_port() < 65536


def test_process_group_stops_the_whole_tree() -> None:
    with peers.ProcessGroup() as group:
        proc = group.start(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
        assert proc.stdout is not None
        child = int(proc.stdout.readline())
        started = time.monotonic()
    assert proc.poll() is not None
    assert time.monotonic() - started < 6
    deadline = time.monotonic() + 3  # SIGKILL lands at once, but a loaded machine schedules late
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    """Running, not a zombie waiting for a reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_origin_stops_on_exit(h264_clip: Path) -> None:
    requires_peer("gstreamer")
    with GstRtspOrigin({"clip.mp4": h264_clip}) as origin:
        proc = origin.process
        assert proc is not None and proc.poll() is None
    assert proc.returncode in (0, -signal.SIGTERM)
    assert origin.events("exit")
