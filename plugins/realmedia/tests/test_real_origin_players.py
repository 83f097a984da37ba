"""Real players against the reference Real origin: ffmpeg (TCP, UDP, SureStream, auth), VLC's
realrtsp, GStreamer's rtspreal, and tshark's RDT dissector on a capture.

The judge is PEERS.md's: ``ffprobe -show_packets -show_data_hash md5`` through the origin gives
the same video packets as the same command on the .rm file (ffmpeg 5.1 does not decode Real
over RTSP, so packets are compared, not frames).
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from mediacache.testing.origin import OriginThread
from mediacache.testing.peers import (
    ProcessGroup,
    ffprobe_packets,
    make_clip,
    run_vlc,
    tshark_capture,
    tshark_decode,
    tshark_malformed,
)
from mediacache.testing.pytest_plugin import requires_peer
from mediacache_realmedia.testing import (
    assert_gstreamer_got_the_clip,
    gstreamer_rdt_sizes,
    surestream_clip,
)
from mediacache_realmedia.wire.rmf import parse_rm

pytestmark = pytest.mark.peers

KINDS = ("rv20_ac3", "rv10_real144")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    requires_peer("ffmpeg")
    d = tmp_path_factory.mktemp("root")
    for kind in KINDS:
        make_clip(d / f"{kind}.rm", 3, kind=kind)
    work = tmp_path_factory.mktemp("work")
    surestream_clip(d / "sure.rm", work)
    for name in ("low.rm", "high.rm"):
        (d / name).write_bytes((work / name).read_bytes())
    return d


@pytest.fixture(scope="module")
def origin(root: Path):  # type: ignore[no-untyped-def]
    with OriginThread.loopback("realmedia", root) as o:
        yield o


def video(rows: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    return [r for r in rows if r[0] == "video"]


@pytest.mark.parametrize("transport", ["tcp", "udp"])
@pytest.mark.parametrize("kind", KINDS)
def test_ffprobe_gets_the_files_video_packets(
    origin: OriginThread, root: Path, kind: str, transport: str, peer_processes: ProcessGroup
) -> None:
    path = root / f"{kind}.rm"
    direct = ffprobe_packets(path)
    got = ffprobe_packets(
        origin.url(path.name), timeout=8, extra_args=["-rtsp_transport", transport],
        group=peer_processes,
    )  # fmt: skip
    assert video(got) == video(direct) and len(video(direct)) > 30
    # ffmpeg's RDT path never learns the audio codec: it hands out the payloads unchanged
    rm = parse_rm(path.read_bytes())
    assert len([r for r in got if r[0] == "audio"]) == sum(1 for p in rm.packets if p.stream == 1)


def test_ffmpeg_subscribes_one_surestream_rate(
    origin: OriginThread, root: Path, peer_processes: ProcessGroup
) -> None:
    """ffprobe ``-select_streams N`` discards the other AVStreams, so ffmpeg subscribes only
    the rule pair of rate N: the low rate's packets are the low file's, the high rate's the
    high file's.

    ffmpeg first subscribes everything while it probes, then Unsubscribes, Subscribes the
    selected pair and PLAYs again from ``npt=0``: the first packet or two come twice.
    """
    for index, name in ((0, "low.rm"), (1, "high.rm")):
        got = video(ffprobe_packets(
            origin.url("sure.rm"), timeout=8,
            extra_args=["-rtsp_transport", "tcp", "-select_streams", str(index)],
            group=peer_processes,
        ))  # fmt: skip
        direct = video(ffprobe_packets(root / name))
        extra = len(got) - len(direct)
        assert 0 <= extra < 5 and got[extra:] == direct, name
        assert got[:extra] == direct[:extra]
    for variant in ("stream=0;rule=0,stream=0;rule=1", "stream=0;rule=2,stream=0;rule=3"):
        assert origin.wait_record(lambda r, v=variant: r.variant == v) is not None


def test_ffprobe_with_credentials(root: Path, peer_processes: ProcessGroup) -> None:
    path = root / "rv20_ac3.rm"
    with OriginThread.loopback("realmedia", root, auth="viewer:s3cret") as o:
        got = ffprobe_packets(
            o.url(path.name, credentials="viewer:s3cret"), timeout=8,
            extra_args=["-rtsp_transport", "tcp"], group=peer_processes,
        )  # fmt: skip
        assert video(got) == video(ffprobe_packets(path))
        for url in (o.url(path.name), o.url(path.name, credentials="viewer:wrong")):
            proc = subprocess.run(
                ["ffprobe", "-v", "error", "-rtsp_transport", "tcp", url],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            assert proc.returncode != 0 and "401" in proc.stderr


def test_vlc_realrtsp_plays_over_tcp(origin: OriginThread, root: Path) -> None:
    """VLC remuxes to TS without decoding: its TS has the AC3 audio (TS takes no RealVideo),
    its log shows both elementary streams and the stream end it stopped at."""
    requires_peer("vlc")
    url = origin.url("rv20_ac3.rm").replace("rtsp://", "realrtsp://")
    result = run_vlc(url, seconds=8, extra_args=["-vv"])
    log = result.stderr
    assert "found a real/helix rtsp server" in log
    assert "adding es: video codec = RV20" in log and "adding es: audio codec = a52" in log
    assert "got end of stream packet" in log  # it read to the end of the clip
    rm = parse_rm((root / "rv20_ac3.rm").read_bytes())
    audio = sum(len(p.payload) for p in rm.packets if p.stream == 1)
    assert result.output_bytes > audio  # all of the audio, in 188-byte TS packets


def test_gstreamer_depayloads_every_packet(
    origin: OriginThread, root: Path, peer_processes: ProcessGroup
) -> None:
    requires_peer("gstreamer")
    sizes = gstreamer_rdt_sizes(origin.url("rv20_ac3.rm"), peer_processes)
    assert_gstreamer_got_the_clip(sizes, parse_rm((root / "rv20_ac3.rm").read_bytes()))


def test_tshark_finds_nothing_malformed_in_a_udp_session(
    origin: OriginThread, root: Path, tmp_path: Path, peer_processes: ProcessGroup
) -> None:
    requires_peer("tshark")
    pool = origin.server.services["realmedia"].pool
    assert pool is not None
    udp = " or ".join(f"udp src port {p.ports[0]}" for p in pool.pairs)
    with tshark_capture(tmp_path / "rdt.pcapng", f"tcp port {origin.port} or {udp}",
                        group=peer_processes) as pcap:  # fmt: skip
        got = ffprobe_packets(
            origin.url("rv20_ac3.rm"), timeout=7, extra_args=["-rtsp_transport", "udp"],
            group=peer_processes,
        )  # fmt: skip
    assert video(got)
    decode = [f"tcp.port=={origin.port},rtsp"]
    assert tshark_malformed(pcap, decode) == 0
    rdt = tshark_decode(pcap, decode, display_filter="rdt", extra_args=["-T", "fields",
                        "-e", "rdt.sequence-number", "-e", "rdt.stream-id"])  # fmt: skip
    rows = [line.split("\t") for line in rdt.splitlines() if line.strip()]
    rm = parse_rm((root / "rv20_ac3.rm").read_bytes())
    data = [r for r in rows if r[0]]
    assert len(data) == len(rm.packets)  # every datagram dissected as an RDT data packet
    assert {r[1] for r in data} == {"0", "1"}
    assert tshark_decode(pcap, decode, display_filter="rdt.stre-seqno")  # the stream ends


def test_gstreamer_authenticates_with_digest(root: Path, peer_processes: ProcessGroup) -> None:
    """rtspsrc answers the 401 with Digest (ffmpeg does too), and then plays."""
    requires_peer("gstreamer")
    with OriginThread.loopback("realmedia", root, auth="viewer:s3cret") as o:
        args = ["gst-launch-1.0", "rtspsrc", f"location={o.url('rv20_ac3.rm')}", "protocols=tcp",
                "user-id=viewer", "user-pw=s3cret", "!", "fakesink"]  # fmt: skip
        proc = peer_processes.start(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(4)  # it plays until stopped
        except subprocess.TimeoutExpired:
            pass
        finally:
            peer_processes.stop(proc, sig=signal.SIGINT)
        record = o.wait_record(lambda r: r.session != "")
    assert record is not None and record.status == 200 and record.bytes_to_client > 20_000
