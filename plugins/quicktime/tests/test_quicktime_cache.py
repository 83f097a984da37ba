"""The cache and the accounting connections, judged by real peers (GStreamer origin, ffmpeg).

A relay that counts bytes sits between the proxy and the origin, so "no media from the origin"
is measured on the wire, not taken from the proxy's own bookkeeping.
"""

from __future__ import annotations

import itertools
import struct
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mediacache.rtp import rtp_payload_offset
from mediacache.rtsp.headers import RtpInfo, parse_range, parse_rtp_info
from mediacache.rtsp.message import InterleavedFrame, Response
from mediacache.rtsp.replay import signed32
from mediacache.testing.judge import by_stream, same_packets
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

CLIP_BYTES = 60_000  # the 4 s test clip carries about 76 kB of RTP; control traffic is < 5 kB


@pytest.fixture(scope="module")
def clip() -> Path:
    return make_clip(seconds=4, kind="h264_aac")


@pytest.fixture(scope="module")
def origin(clip: Path) -> Iterator[GstRtspOrigin]:
    with GstRtspOrigin(vod={"clip.mp4": clip}, live=()) as o:
        yield o


@pytest.fixture(scope="module")
def direct(origin: GstRtspOrigin) -> list:  # type: ignore[type-arg]
    return ffmpeg_framemd5(origin.url("/vod/clip.mp4"), transport="tcp", timeout=40)


@pytest.fixture
def relay(origin: GstRtspOrigin) -> Iterator[ByteCountingRelay]:
    with ByteCountingRelay(origin.port) as r:
        yield r


def config(port: int, extra: str = "") -> str:
    return (
        "[[routes]]\nformat = 'quicktime'\nprefix = '/vod/'\n"
        f"origin = 'rtsp://127.0.0.1:{port}/vod/'\n" + extra
    )


def url_of(p: ProxyThread) -> str:
    return f"rtsp://127.0.0.1:{p.port('quicktime')}/vod/clip.mp4"


def play(p: ProxyThread, transport: str = "tcp", *args: str) -> list:  # type: ignore[type-arg]
    return ffmpeg_framemd5(url_of(p), transport=transport, timeout=40, input_args=args)  # type: ignore[arg-type]


def cached_keys(p: ProxyThread) -> list[str]:
    return p.call(lambda: [f"{i.key.url} [{i.key.variant}]" for i in p.cache.store.list()])


@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_a_hit_plays_the_origins_packets_and_costs_no_origin_media(
    relay: ByteCountingRelay,
    direct: list,
    transport: str,  # type: ignore[type-arg]
) -> None:
    with ProxyThread(config(relay.port)) as p:
        first = play(p, transport)
        miss_bytes = relay.bytes_down
        assert same_packets(first, direct)
        assert miss_bytes > CLIP_BYTES
        second = play(p, transport)
        assert same_packets(second, direct)
        assert relay.bytes_down - miss_bytes < 5_000  # the accounting session's control only
        records = p.wait_records(2)
        assert [r.result for r in records] == ["MISS", "HIT"]
        assert records[0].origin_bytes > CLIP_BYTES and records[1].origin_bytes == 0
        assert records[1].bytes_to_client > CLIP_BYTES
        assert records[1].variant == records[0].variant == "stream=0,stream=1"


def test_restart_keeps_objects(relay: ByteCountingRelay, direct: list, tmp_path: Path) -> None:  # type: ignore[type-arg]
    with ProxyThread(config(relay.port), cache_dir=tmp_path) as p:
        play(p)
    filled = relay.bytes_down
    assert filled > CLIP_BYTES
    with ProxyThread(config(relay.port), cache_dir=tmp_path) as p:
        assert same_packets(play(p, "udp"), direct)
        assert p.wait_records(1)[0].result == "HIT"
    assert relay.bytes_down - filled < 5_000


def test_a_damaged_object_file_is_refetched(
    relay: ByteCountingRelay,
    direct: list,
    tmp_path: Path,  # type: ignore[type-arg]
) -> None:
    with ProxyThread(config(relay.port), cache_dir=tmp_path) as p:
        play(p)
    (obj,) = list((tmp_path / "objects").glob("*.mco"))
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0xFF
    obj.write_bytes(bytes(data))
    filled = relay.bytes_down
    with ProxyThread(config(relay.port), cache_dir=tmp_path) as p:
        assert same_packets(play(p), direct)
        assert p.wait_records(1)[0].result == "MISS"
    assert relay.bytes_down - filled > CLIP_BYTES


def test_clients_joining_a_fill_read_from_it(relay: ByteCountingRelay, direct: list) -> None:  # type: ignore[type-arg]
    with ProxyThread(config(relay.port)) as p, ThreadPoolExecutor(2) as pool:
        first = pool.submit(play, p, "tcp")
        time.sleep(1.0)
        second = pool.submit(play, p, "udp")
        assert same_packets(first.result(), direct) and same_packets(second.result(), direct)
        results = sorted(r.result for r in p.wait_records(2))
        assert results == ["HIT", "MISS"]
    assert relay.bytes_down < 2 * CLIP_BYTES  # one origin feed, not two


def test_a_variant_caches_only_what_was_asked(relay: ByteCountingRelay) -> None:
    with ProxyThread(config(relay.port)) as p:
        url = url_of(p)
        with MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
            assert c.request("DESCRIBE", url).status == 200
            t = "RTP/AVP/TCP;unicast;interleaved=0-1"
            assert c.request("SETUP", f"{url}/stream=0", [("Transport", t)]).status == 200
            assert c.request("PLAY", url).status == 200
            c.read_frames(8)
        assert p.wait_records(1)[0].variant == "stream=0"
        assert cached_keys(p) == [f"rtsp://127.0.0.1:{relay.port}/vod/clip.mp4 [stream=0]"]
        play(p)  # both tracks: another variant, so a miss
        assert [r.result for r in p.wait_records(2)] == ["MISS", "MISS"]
        assert len(cached_keys(p)) == 2


def test_seek_into_a_cached_clip(relay: ByteCountingRelay, direct: list) -> None:  # type: ignore[type-arg]
    with ProxyThread(config(relay.port)) as p:
        play(p)
        sought = play(p, "tcp", "-ss", "2")
    full, got = by_stream(direct), by_stream(sought)
    video = got[0]
    assert 0 < len(video) < len(full[0]) * 0.7  # started well into the clip
    start = len(full[0]) - len(video)
    assert full[0][start:] == video  # a suffix of the clip: nothing missing after the start
    assert video[0][0] > 1000  # the first packet is a key frame (IDR with SPS/PPS)
    assert start == 50  # 25 fps, a key frame every 25 frames: 2.0 s is key frame 50
    assert got[1] == full[1][len(full[1]) - len(got[1]) :]


def _setup_both_tracks(c: MiniRtspClient, url: str) -> list[int]:
    """DESCRIBE and SETUP both tracks interleaved (0-1, 2-3); each track's RTP clock rate."""
    from mediacache.rtsp.caching import clock_rate_of
    from mediacache.rtsp.sdp import parse_sdp

    described = c.request("DESCRIBE", url)
    assert described.status == 200
    for i in range(2):
        t = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"
        assert c.request("SETUP", f"{url}/stream={i}", [("Transport", t)]).status == 200
    sd = parse_sdp(described.body)
    return [clock_rate_of(sd, i)[0] for i in range(2)]


def _play_mapping(resp: Response) -> tuple[float, dict[int, RtpInfo]]:
    """A PLAY reply's Range start and its RTP-Info by RTP channel (stream=i: channel 2i)."""
    assert resp.status == 200
    start = parse_range(resp.headers.get("Range") or "").start
    infos = parse_rtp_info(resp.headers.get("RTP-Info") or "")
    by_channel = {2 * int(i.url.rstrip("/").rsplit("=", 1)[1]): i for i in infos}
    assert start is not None and sorted(by_channel) == [0, 2]
    return start, by_channel


def _rtp(frame: InterleavedFrame) -> tuple[int, int, int, bytes]:
    """(seq, timestamp, ssrc, payload) of an interleaved RTP frame."""
    data = bytes(frame.payload)
    seq, ts, ssrc = struct.unpack(">HII", data[2:12])
    return seq, ts, ssrc, data[rtp_payload_offset(data) :]


def test_seeks_on_a_hit_keep_each_tracks_numbering_and_timing(relay: ByteCountingRelay) -> None:
    """PLAY, PLAY Range 2.0-, PLAY Range 0.5- on a cached clip of two tracks, no PAUSE between.
    Per track: RTP-Info seq is the first packet's after each PLAY, one SSRC all along,
    sequence numbers without a break, and every packet's timestamp maps through the RTP-Info
    rtptime and the Range start to the media time the origin gave the same payload."""
    with ProxyThread(config(relay.port)) as p:
        url = url_of(p)
        media_times: dict[tuple[int, bytes], set[float]] = {}
        with MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:  # the MISS: origin stamps
            rates = _setup_both_tracks(c, url)
            start, infos = _play_mapping(c.request("PLAY", url, [("Range", "npt=0-")]))
            c.read_frames(10)
            for f in c.frames:
                if f.channel in infos:
                    _, ts, _, payload = _rtp(f)
                    rel = signed32(ts - (infos[f.channel].rtptime or 0))
                    t = start + rel / rates[f.channel // 2]
                    media_times.setdefault((f.channel, payload), set()).add(t)
        assert p.wait_records(1)[0].result == "MISS"
        with MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
            _setup_both_tracks(c, url)
            for asked, at_most in ((None, 0.0), (2.0, 2.0), (0.5, 0.5)):
                rng = [("Range", f"npt={asked}-")] if asked is not None else []
                start, infos = _play_mapping(c.request("PLAY", url, rng))
                assert at_most - 1.0 < start <= at_most  # the key frame at or before it
                first = len(c.frames)
                c.read_frames(0.8, until_bye=False)
                for channel, info in infos.items():
                    got = [_rtp(f) for f in c.frames[first:] if f.channel == channel]
                    assert len(got) > 10 and got[0][0] == info.seq
                    rate = rates[channel // 2]
                    for _, ts, _, payload in got:
                        t = start + signed32(ts - (info.rtptime or 0)) / rate
                        known = media_times.get((channel, payload), set())
                        assert any(abs(t - m) <= 2 / rate for m in known), (asked, channel, t)
                video = _rtp(next(f for f in c.frames[first:] if f.channel == 0))
                assert video[1] == infos[0].rtptime  # playback starts at the Range start
        for channel in (0, 2):
            packets = [_rtp(f) for f in c.frames if f.channel == channel]
            assert len({ssrc for _, _, ssrc, _ in packets}) == 1
            seqs = [seq for seq, _, _, _ in packets]
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert [r.result for r in p.wait_records(2)] == ["MISS", "HIT"]


def test_an_origin_killed_mid_fill_leaves_nothing_servable(clip: Path) -> None:
    origin = GstRtspOrigin(vod={"clip.mp4": clip}, live=()).start()
    try:
        with ProxyThread(config(origin.port)) as p:
            proc = subprocess.Popen(
                ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url_of(p),
                 "-map", "0", "-c", "copy", "-f", "framemd5", "-"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + 10
                while p.call(lambda: p.cache.store.stats().fills) != 1:
                    assert time.monotonic() < deadline, "the fill did not start"
                    time.sleep(0.05)
                time.sleep(1.0)
                origin.stop()  # mid-fill: the clip lasts 4 s
                try:
                    out, err = proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    pytest.fail("ffmpeg did not end by itself within 20 s of the origin's death")
            finally:
                proc.kill()
                proc.wait()
            # a clean end: the frames that came, then the end of its input (exit 0, no error)
            assert proc.returncode == 0, err.decode(errors="replace")[-500:]
            assert len(out.splitlines()) > 20
            assert p.wait_idle(10)
            assert cached_keys(p) == []
            assert p.call(lambda: p.cache.store.stats().fills) == 0
    finally:
        origin.stop()


def test_a_layer_failure_mid_fill_aborts_the_fill_and_frees_its_joiner(
    relay: ByteCountingRelay, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the filling session's layer (simulated: its frame recorder raises after a
    second) must not leave a fill its joiner waits on forever: the driver calls the layer's
    ``abort``, the fill is aborted, the joiner gets a clean end, both sessions are recorded."""
    from mediacache.rtsp.proxy import RtspProxyLayer

    started = time.monotonic()
    record = RtspProxyLayer._record

    def failing_record(self: RtspProxyLayer, frame: object, out: list) -> None:  # type: ignore[type-arg]
        if time.monotonic() - started > 1.5:
            raise RuntimeError("simulated bug in the fill path")
        record(self, frame, out)  # type: ignore[arg-type]

    monkeypatch.setattr(RtspProxyLayer, "_record", failing_record)
    with ProxyThread(config(relay.port)) as p, ThreadPoolExecutor(2) as pool:
        first = pool.submit(play_until_end, p)
        time.sleep(0.8)
        second = pool.submit(play_until_end, p)
        assert first.result(timeout=30) >= 0 and second.result(timeout=30) >= 0  # both ended
        records = p.wait_records(2)
        miss = next(r for r in records if r.result == "MISS")
        assert miss.reason == "internal error" and {r.result for r in records} == {"HIT", "MISS"}
        assert p.wait_idle(10)
        assert cached_keys(p) == [] and p.call(lambda: p.cache.store.stats().fills) == 0


def play_until_end(p: ProxyThread) -> int:
    """ffmpeg over TCP until its input ends, however it ends (its exit code)."""
    proc = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url_of(p),
         "-map", "0", "-c", "copy", "-f", "null", "-"],
        capture_output=True, timeout=25,
    )  # fmt: skip
    return proc.returncode


# -- accounting ---------------------------------------------------------------------------


def _hold_sessions(p: ProxyThread, n: int) -> list[MiniRtspClient]:
    """n clients that set up and play the cached clip, over TCP, and keep their sessions."""
    clients = []
    url = url_of(p)
    for _ in range(n):
        c = MiniRtspClient("127.0.0.1", p.port("quicktime"))
        clients.append(c)
        if c.request("DESCRIBE", url).status != 200:
            break
        t = "RTP/AVP/TCP;unicast;interleaved=0-1"
        r = c.request("SETUP", f"{url}/stream=0", [("Transport", t)])
        c.last_status = r.status  # type: ignore[attr-defined]
        if r.status != 200:
            break
        t = "RTP/AVP/TCP;unicast;interleaved=2-3"
        c.request("SETUP", f"{url}/stream=1", [("Transport", t)])
        c.last_status = c.request("PLAY", url).status  # type: ignore[attr-defined]
    return clients


def _prime(p: ProxyThread) -> None:
    with MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
        c.play_all_tcp(url_of(p), seconds=10)
    assert p.wait_records(1)[0].result == "MISS"


def test_eight_clients_on_a_cached_clip_are_eight_origin_sessions(clip: Path) -> None:
    with GstRtspOrigin(vod={"clip.mp4": clip}, live=()) as o, ProxyThread(config(o.port)) as p:
        _prime(p)
        assert o.wait_for(lambda: o.active_sessions() == 0, 5)
        before = len(o.requests("PLAY"))
        clients = _hold_sessions(p, 8)
        try:
            assert all(c.last_status == 200 for c in clients)  # type: ignore[attr-defined]
            assert o.wait_for(lambda: o.active_sessions() == 8, 5)
            assert len(o.requests("PLAY")) == before  # no media asked for on a hit
            # one client leaves: its accounting connection closes within a second
            open_before = o.connections_open
            clients.pop().close()
            assert o.wait_for(lambda: o.connections_open == open_before - 1, 1.0)
            assert o.wait_for(lambda: o.active_sessions() == 7, 2)
        finally:
            for c in clients:
                c.close()
        records = p.wait_records(9)
        assert [r.result for r in records[1:]] == ["HIT"] * 8


def test_an_origin_session_limit_refuses_a_client_on_a_hit(clip: Path) -> None:
    with (
        GstRtspOrigin(vod={"clip.mp4": clip}, live=(), max_sessions=2) as o,
        ProxyThread(config(o.port)) as p,
    ):
        _prime(p)
        assert o.wait_for(lambda: o.active_sessions() == 0, 5)
        clients = _hold_sessions(p, 3)
        try:
            statuses = [c.last_status for c in clients]  # type: ignore[attr-defined]
            assert statuses[:2] == [200, 200]
            assert statuses[2] in (453, 503)  # the origin's refusal, relayed
        finally:
            for c in clients:
                c.close()


def test_a_wrong_password_is_refused_on_a_cached_clip(clip: Path) -> None:
    with (
        GstRtspOrigin(vod={"clip.mp4": clip}, live=(), auth="user:secret") as o,
        ProxyThread(config(o.port)) as p,
    ):
        good = f"rtsp://user:secret@127.0.0.1:{p.port('quicktime')}/vod/clip.mp4"
        first = ffmpeg_framemd5(good, transport="tcp", timeout=40)
        second = ffmpeg_framemd5(good, transport="tcp", timeout=40)
        assert same_packets(first, second)
        assert [r.result for r in p.wait_records(2)] == ["MISS", "HIT"]
        bad = f"rtsp://user:wrong@127.0.0.1:{p.port('quicktime')}/vod/clip.mp4"
        with pytest.raises(Exception, match=r"401|Unauthorized|authorization"):
            ffmpeg_framemd5(bad, transport="tcp", timeout=20)


def test_pause_and_resume_on_a_hit(relay: ByteCountingRelay) -> None:
    with ProxyThread(config(relay.port)) as p:
        _prime(p)
        with MiniRtspClient("127.0.0.1", p.port("quicktime")) as c:
            url = url_of(p)
            c.request("DESCRIBE", url)
            c.request("SETUP", f"{url}/stream=0", [("Transport", "RTP/AVP/TCP;interleaved=0-1")])
            c.request("SETUP", f"{url}/stream=1", [("Transport", "RTP/AVP/TCP;interleaved=2-3")])
            r = c.request("PLAY", url)
            assert r.status == 200 and "seq=" in (r.headers.get("RTP-Info") or "")
            c.read_frames(1.0, until_bye=False)
            assert c.request("PAUSE", url).status == 200
            n = len(c.frames)
            c.read_frames(1.0, until_bye=False)
            assert len(c.frames) <= n + 1  # nothing (but a report) while paused
            r = c.request("PLAY", url)
            assert r.status == 200
            c.read_frames(1.0, until_bye=False)
            seqs = [int.from_bytes(f.payload[2:4], "big") for f in c.frames if f.channel == 0]
            assert len(seqs) > 30
            assert all((b - a) & 0xFFFF == 1 for a, b in itertools.pairwise(seqs))
        assert [r.result for r in p.wait_records(2)] == ["MISS", "HIT"]


def test_a_route_forced_live_is_passed_never_cached(origin: GstRtspOrigin) -> None:
    """``[[routes]] live = true`` on an on-demand clip: never cached (the splitter takes it);
    the origin's ``Cache-Control`` is covered by the layer's playbooks."""
    with ProxyThread(config(origin.port, "live = true\n")) as p:
        play(p)
        play(p)
        assert [r.result for r in p.wait_records(2)] == ["PASS", "PASS"]
        assert cached_keys(p) == [] and p.call(lambda: p.cache.store.stats().fills) == 0


def test_a_proxy_killed_mid_fill_leaves_no_object(origin: GstRtspOrigin, tmp_path: Path) -> None:
    """SIGKILL during a fill, then a restart on the same cache: nothing servable, no debris."""
    import json
    import signal
    import sys
    import urllib.request

    from mediacache.testing.peers import free_port
    from mediacache.testing.proxy import free_udp_range

    port, admin = free_port(), free_port()
    conf = tmp_path / "proxy.toml"
    conf.write_text(
        f"cache_dir = '{tmp_path / 'cache'}'\n"
        + config(origin.port)
        + f"[admin]\nlisten = '127.0.0.1:{admin}'\n"
        + f"[formats.quicktime]\nlisten = '127.0.0.1:{port}'\nudp_ports = '{free_udp_range()}'\n"
    )

    def serve() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mediacache.cli", "serve", "-c", str(conf)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=1):
                    return proc
            except OSError:
                time.sleep(0.1)
        proc.kill()
        _, err = proc.communicate(timeout=5)
        raise RuntimeError(f"proxy did not start: {err.decode(errors='replace')[-2000:]}")

    def listing() -> list:  # type: ignore[type-arg]
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/cache", timeout=5) as resp:
            return json.loads(resp.read())

    proxy = serve()
    url = f"rtsp://127.0.0.1:{port}/vod/clip.mp4"
    player = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-v", "error", "-rtsp_transport", "tcp", "-i", url,
         "-map", "0", "-c", "copy", "-f", "null", "-"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(2.0)
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/status", timeout=5) as resp:
            assert json.loads(resp.read())["cache"]["fills"] == 1  # killed in the middle
        proxy.send_signal(signal.SIGKILL)
        proxy.wait(10)
        player.wait(20)
        proxy = serve()
        assert listing() == []
        leftovers = [
            p.name for p in (tmp_path / "cache").rglob("*") if p.suffix in (".tmp", ".mco")
        ]
        assert leftovers == []
    finally:
        for proc in (player, proxy):
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("leave_after", "kept"), [(2.8, True), (0.8, False)])
def test_background_fill_when_the_first_client_leaves(
    relay: ByteCountingRelay, leave_after: float, kept: bool
) -> None:
    """[cache] background_fill = 0.5: past half the clip the fill goes on without its client,
    and the origin bytes of its rest are in one more access record (MISS, no client bytes)."""
    with ProxyThread(config(relay.port)) as p:
        url = url_of(p)
        c = MiniRtspClient("127.0.0.1", p.port("quicktime"))
        c.request("DESCRIBE", url)
        for i in range(2):
            t = f"RTP/AVP/TCP;unicast;interleaved={2 * i}-{2 * i + 1}"
            c.request("SETUP", f"{url}/stream={i}", [("Transport", t)])
        c.request("PLAY", url)
        c.read_frames(leave_after, until_bye=False)
        c.close()
        assert p.wait_records(1)[0].reason == "client closed"
        assert p.wait_idle(8)  # the background session ends with its fill
        assert (len(cached_keys(p)) == 1) is kept
        records = p.records()
        if not kept:
            assert [r.result for r in records] == ["MISS"]
            return
        client, background = records
        assert (background.result, background.reason) == ("MISS", "background fill complete")
        assert (background.url, background.bytes_to_client) == (client.url, 0)
        size = p.call(lambda: p.cache.store.list()[0].size)  # the clip's RTP bytes
        assert client.origin_bytes < size <= client.origin_bytes + background.origin_bytes
        assert relay.bytes_down - 5_000 < client.origin_bytes + background.origin_bytes


def test_a_clip_changed_at_the_origin_is_refetched() -> None:
    """The accounting DESCRIBE revalidates: a different SDP means the stored object is stale."""
    from mediacache.testing.peers import free_port

    port = free_port()
    with ProxyThread(config(port)) as p:
        with GstRtspOrigin(vod={"clip.mp4": make_clip(seconds=4)}, live=(), port=port):
            play(p)
        with GstRtspOrigin(vod={"clip.mp4": make_clip(seconds=3)}, live=(), port=port) as o2:
            changed = play(p)
            direct = ffmpeg_framemd5(o2.url("/vod/clip.mp4"), transport="tcp", timeout=40)
        assert same_packets(changed, direct)  # the new clip, not the stored one
        assert [r.result for r in p.wait_records(2)] == ["MISS", "MISS"]
