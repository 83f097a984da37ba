"""Golden bytes: real RTSP sessions captured on loopback.

Provenance of ``data/``: gst-rtsp-server 1.22 serving ``/test`` (H.264 ``pay0`` + PCMU ``pay1``,
shared media, session timeout set to 30 s), played once by ffmpeg (Lavf59.27.100, ``-rtsp_transport
tcp`` and the default UDP) and once by GStreamer's rtspsrc (``protocols=tcp`` and ``udp``). A small
TCP relay wrote each direction to ``<client>_<transport>.c2s`` (client to server) and ``.s2c``.
The ffmpeg TCP ``.s2c`` file carries 129 interleaved RTP frames; the GStreamer TCP ``.c2s`` file
carries two interleaved RTCP receiver reports sent by the player.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mediacache import rtp
from mediacache.rtsp import (
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    build_message,
    parse_range,
    parse_rtp_info,
    parse_sdp,
    parse_session,
    parse_transports,
    resolve_url,
)

DATA = Path(__file__).parent / "data"
CAPTURES = sorted(p.name for p in DATA.iterdir() if p.suffix in (".c2s", ".s2c"))


def _events(name: str, chunk: int | None = None) -> list:
    data = (DATA / name).read_bytes()
    reader = RtspReader()
    out = []
    step = chunk or len(data)
    for i in range(0, len(data), step):
        reader.receive_data(data[i : i + step])
        out.extend(reader.events())
    assert reader.buffered == 0
    return out


@pytest.mark.parametrize("name", CAPTURES)
def test_capture_rebuilds_byte_for_byte(name: str) -> None:
    """Parsing then re-serialising every event reproduces the capture exactly."""
    data = (DATA / name).read_bytes()
    assert b"".join(build_message(e) for e in _events(name)) == data


@pytest.mark.parametrize("name", CAPTURES)
@pytest.mark.parametrize("chunk", [1, 7, 1460])
def test_capture_chunking_does_not_matter(name: str, chunk: int) -> None:
    assert _events(name, chunk) == _events(name)


def test_ffmpeg_tcp_requests() -> None:
    events = _events("ffmpeg_tcp.c2s")
    assert [(e.method, e.uri, e.cseq) for e in events] == [
        ("OPTIONS", "rtsp://127.0.0.1:18555/test", 1),
        ("DESCRIBE", "rtsp://127.0.0.1:18555/test", 2),
        ("SETUP", "rtsp://127.0.0.1:18555/test/stream=0", 3),
        ("SETUP", "rtsp://127.0.0.1:18555/test/stream=1", 4),
        ("PLAY", "rtsp://127.0.0.1:18555/test/", 5),
        ("TEARDOWN", "rtsp://127.0.0.1:18555/test/", 6),
    ]
    options, describe, setup0, setup1, play, _ = events
    assert options == Request(
        "OPTIONS",
        "rtsp://127.0.0.1:18555/test",
        Headers([("CSeq", "1"), ("User-Agent", "Lavf59.27.100")]),
    )
    assert describe.headers.get("accept") == "application/sdp"
    [spec] = parse_transports(setup0.headers["Transport"])
    assert (spec.protocol, spec.lower_transport, spec.unicast, spec.interleaved) == (
        "RTP/AVP/TCP",
        "TCP",
        True,
        (0, 1),
    )
    assert parse_transports(setup1.headers["Transport"])[0].interleaved == (2, 3)
    assert parse_session(setup1.headers["Session"]).id == "B9c15agfZy5zIlOY"
    assert parse_range(play.headers["Range"]) == parse_range("npt=0-")


def test_gstreamer_describe_reply_and_sdp() -> None:
    events = _events("ffmpeg_tcp.s2c")
    responses = [e for e in events if isinstance(e, Response)]
    frames = [e for e in events if isinstance(e, InterleavedFrame)]
    assert len(responses) == 6 and len(frames) == 129
    options, describe, setup0, _, play, teardown = responses
    assert events[-1] is teardown  # TEARDOWN's reply follows the last frame
    assert options.headers["Public"].split(", ")[:3] == ["OPTIONS", "DESCRIBE", "ANNOUNCE"]
    assert isinstance(describe, Response)
    assert (describe.status, describe.reason, describe.cseq) == (200, "OK", 2)
    assert describe.headers["Content-Type"] == "application/sdp"
    assert describe.headers["Content-Length"] == str(len(describe.body)) == "708"
    base = describe.headers["Content-Base"]
    assert base == "rtsp://127.0.0.1:18555/test/"

    sdp = parse_sdp(describe.body)
    assert sdp.session_lines[0] == "v=0"
    assert sdp.control == "*"
    assert sdp.range is not None and sdp.range.start == 0 and sdp.range.end is None
    assert sdp.range_is_open and not sdp.is_live
    assert [m.media_type for m in sdp.media] == ["video", "audio"]
    assert [m.control for m in sdp.media] == ["stream=0", "stream=1"]
    assert sdp.media[0].attributes("rtpmap") == ["96 H264/90000"]
    assert [resolve_url(base, m.control or "*") for m in sdp.media] == [
        "rtsp://127.0.0.1:18555/test/stream=0",
        "rtsp://127.0.0.1:18555/test/stream=1",
    ]

    [spec] = parse_transports(setup0.headers["Transport"])
    assert setup0.headers["Transport"] == (
        'RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=3B633CC4;mode="PLAY"'
    )
    assert (spec.ssrc, spec.mode) == ("3B633CC4", "PLAY")
    assert spec.build() == setup0.headers["Transport"]

    infos = parse_rtp_info(play.headers["RTP-Info"])
    assert [(i.url, i.seq, i.rtptime) for i in infos] == [
        ("rtsp://127.0.0.1:18555/test/stream=0", 4865, 1344256281),
        ("rtsp://127.0.0.1:18555/test/stream=1", 6003, 1202957439),
    ]
    assert teardown.cseq == 6

    # The frames start with PLAY's RTP-Info values: seq and rtptime line up.
    first_audio = next(f for f in frames if f.channel == 2)
    assert rtp.rtp_seq(first_audio.payload) == 6003
    assert rtp.rtp_timestamp(first_audio.payload) == 1202957439
    first_video = next(f for f in frames if f.channel == 0)
    assert rtp.rtp_seq(first_video.payload) == 4865
    assert rtp.parse_rtp_header(first_video.payload).payload_type == 96


def test_gstreamer_udp_setup_replies() -> None:
    events = _events("gstreamer_udp.s2c")
    setup = events[2]
    [spec] = parse_transports(setup.headers["Transport"])
    assert spec.lower_transport == "UDP"
    assert spec.client_port == (59362, 59363)
    assert spec.server_port == (57792, 57793)
    assert spec.build() == setup.headers["Transport"]
    session = parse_session(setup.headers["Session"])
    assert (session.id, session.timeout) == ("JwSblTjl61h8ZSpn", 30)
    assert session.build() == "JwSblTjl61h8ZSpn;timeout=30"
    assert events[-1].headers["Connection"] == "close"


def test_ffmpeg_udp_setup_request() -> None:
    setup = _events("ffmpeg_udp.c2s")[2]
    [spec] = parse_transports(setup.headers["Transport"])
    assert spec.protocol == "RTP/AVP/UDP"
    assert spec.lower_transport == "UDP"
    assert spec.client_port == (20312, 20313)


def test_gstreamer_client_sends_duplicate_headers_and_rtcp() -> None:
    events = _events("gstreamer_tcp.c2s")
    options = events[0]
    assert options.headers.get_all("User-Agent") == [
        "GStreamer/1.22.0",
        "RealMedia Player Version 6.0.9.1235 (linux-2.0-libc6-i386-gcc2.95)",
    ]
    frames = [e for e in events if isinstance(e, InterleavedFrame)]
    assert [f.channel for f in frames] == [3, 1]
    for frame in frames:
        assert rtp.is_rtcp(frame.payload)
        rr_bytes, sdes = rtp.split_rtcp(frame.payload)
        assert sdes[1] == rtp.RTCP_PT_SDES
        rr = rtp.parse_receiver_report(rr_bytes)
        assert len(rr.reports) == 1
        assert rr.reports[0].cumulative_lost == -1  # 0xFFFFFF: the field is signed
        assert rtp.build_receiver_report(rr) == rr_bytes
    assert [e.method for e in events if isinstance(e, Request)][-1] == "TEARDOWN"
