"""Real players through the MMS proxy: ffmpeg over mmst, VLC over mmst and mmsu.

The judge is the file itself: ffmpeg's framemd5 (stream, size, hash) through the proxy equals
ffmpeg reading the file (as for the origin alone), and VLC's ``--demux=dump`` is the file's
header plus exactly the packets of the streams VLC selected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from wmt_origin_env import (
    by_stream,
    clip,
    ffmpeg_rows,
    file_packets,
    have,
    vlc_dump,
    vlc_udp_port_lock,
)
from wmt_proxy_env import expected, origin_thread, proxy_url, routed

from mediacache.testing import peers
from mediacache.testing.origin import OriginThread
from mediacache.testing.proxy import ProxyThread

pytestmark = [pytest.mark.peers, pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg")]


@pytest.fixture
def origin() -> Iterator[OriginThread]:
    with origin_thread() as o:
        yield o
        assert o.wait_idle(), "an origin session outlived its proxy session"


@pytest.fixture
def group() -> Iterator[peers.ProcessGroup]:
    with peers.ProcessGroup() as g:
        yield g


@pytest.mark.parametrize("name", ["clip.wmv", "multi.wmv"])
def test_ffmpeg_through_a_reverse_route_gets_the_packets_of_the_file(origin, group, name) -> None:
    with ProxyThread(routed(origin.port, "[cache]\nenabled = false\n")) as p:
        got = peers.ffmpeg_framemd5(proxy_url(p, name), timeout=60, group=group)
        assert by_stream(got) == by_stream(peers.ffmpeg_framemd5_file(clip(name)))
        [record] = p.wait_records(1)
        assert (record.result, record.status, record.transport) == ("PASS", 200, "MMST")
        assert record.url == proxy_url(p, name).replace("mmst://", "mms://")
        assert record.origin_bytes > 100_000 and record.bytes_to_client > record.origin_bytes
        assert record.variant == ("1,2" if name == "clip.wmv" else "1,2,3,4")
        assert p.wait_idle()
    # one origin session for the one player, closed when it left
    [origin_record] = origin.wait_records(1)
    assert (origin_record.url, origin_record.reason) == (name, "closed by the player")


def test_ffmpeg_forward_mode_goes_to_the_host_the_player_names(origin, group) -> None:
    # ffmpeg says "Host: 127.0.0.1" in Connect; no route matches, so that host is the origin,
    # on the format's origin port (1755 in production, the test origin's port here)
    config = f"[formats.wmt]\norigin_port = {origin.port}\n"
    with ProxyThread(config) as p:
        url = f"mmst://127.0.0.1:{p.port('wmt')}/clip.wmv"
        got = peers.ffmpeg_framemd5(url, timeout=60, group=group)
        assert by_stream(got) == by_stream(peers.ffmpeg_framemd5_file(clip("clip.wmv")))
        assert p.wait_records(1)[0].result == "MISS"
    assert origin.wait_records(1)[0].url == "clip.wmv"


def test_forward_mode_off_refuses_what_no_route_serves(origin, group) -> None:
    config = f"[formats.wmt]\norigin_port = {origin.port}\nforward = false\n"
    with ProxyThread(config) as p:
        code, rows, err = ffmpeg_rows(f"mmst://127.0.0.1:{p.port('wmt')}/clip.wmv", group,
                                      timeout=20)
        assert code != 0 and not rows and "0xc00d001a" in err.lower()  # file not found
        assert p.wait_records(1)[0].status == 404
    assert origin.records() == []


def test_an_unknown_file_gets_the_origins_error(origin, group) -> None:
    with ProxyThread(routed(origin.port)) as p:
        code, rows, err = ffmpeg_rows(proxy_url(p, "missing.wmv"), group, timeout=20)
        assert code != 0 and not rows and "0xc00d001a" in err.lower()
        assert p.wait_records(1)[0].status == 404


def test_an_unreachable_origin_is_reported_to_the_player(group) -> None:
    port = peers.free_port()
    with ProxyThread(routed(port)) as p:
        code, rows, err = ffmpeg_rows(proxy_url(p, "clip.wmv"), group, timeout=20)
        assert code != 0 and not rows and "0xc00d0029" in err.lower()  # connection lost
        [record] = p.wait_records(1)
        assert record.status == 502 and "unreachable" in record.reason


@pytest.mark.skipif(not have("vlc"), reason="needs VLC")
@pytest.mark.parametrize("cache", [True, False], ids=["cached", "relayed"])
@pytest.mark.parametrize("scheme", ["mmst", "mmsu"])
def test_vlc_plays_through_the_proxy(origin, group, scheme, cache) -> None:
    extra = "" if cache else "[cache]\nenabled = false\n"
    with ProxyThread(routed(origin.port, extra)) as p:
        lock = vlc_udp_port_lock if scheme == "mmsu" else contextlib.nullcontext
        runs = 2 if cache else 1  # a miss, then a hit
        header = file_packets(clip("multi.wmv"))[0].raw
        for run in range(runs):
            with lock():
                dump, log, code = vlc_dump(proxy_url(p, "multi.wmv", scheme), group)
            assert code == 0, log[-4000:]
            assert "end of media stream" in log, log[-4000:]
            record = p.wait_records(run + 1)[-1]
            selected = {int(n) for n in record.variant.split(",")}
            assert len(selected) == 2 and 4 in selected  # one video of three, and the audio
            assert dump == header + b"".join(expected("multi.wmv", selected))
        results = [r.result for r in p.records()]
        assert results == (["MISS", "HIT"] if cache else ["PASS"])
        assert {r.transport for r in p.records()} == {scheme.upper()}
    assert len(origin.wait_records(runs)) == runs  # an accounting session for the hit too


@pytest.mark.skipif(not have("tshark"), reason="needs tshark")
def test_tshark_reads_both_sides_of_the_proxy_without_malformed_packets(
    origin, group, tmp_path
) -> None:
    with ProxyThread(routed(origin.port)) as p:
        pcap = tmp_path / "mms.pcapng"
        ports = (p.port("wmt"), origin.port)
        with peers.tshark_capture(pcap, " or ".join(f"tcp port {x}" for x in ports), group=group):
            for _ in range(2):  # a miss, then a hit
                assert peers.ffmpeg_framemd5(proxy_url(p, "multi.wmv"), group=group)
    decode = [f"tcp.port=={x},msmms" for x in ports]
    assert peers.tshark_malformed(pcap, decode) == 0
    summary = peers.tshark_decode(pcap, decode)
    commands = [line for line in summary.splitlines() if "MSMMS" in line and "Command:" in line]
    assert sum("Sending media file now" in line for line in commands) >= 3  # 2 to ffmpeg, 1 to us
