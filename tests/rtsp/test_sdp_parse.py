"""SDP: tolerant parsing, byte-exact rebuilding, control and range accessors, rewriting."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError, RemoteProtocolError
from mediacache.rtsp import (
    MediaDescription,
    NptRange,
    SessionDescription,
    build_sdp,
    parse_sdp,
    rebase_url,
    rewrite_controls,
)

# gst-rtsp-server 1.22, as captured in data/ffmpeg_tcp.s2c.
GSTREAMER_SDP = (
    b"v=0\r\n"
    b"o=- 7806835476514754284 1 IN IP4 127.0.0.1\r\n"
    b"s=Session streamed with GStreamer\r\n"
    b"i=rtsp-server\r\n"
    b"t=0 0\r\n"
    b"a=tool:GStreamer\r\n"
    b"a=type:broadcast\r\n"
    b"a=control:*\r\n"
    b"a=range:npt=0-\r\n"
    b"m=video 0 RTP/AVP 96\r\n"
    b"c=IN IP4 0.0.0.0\r\n"
    b"b=AS:2097\r\n"
    b"a=rtpmap:96 H264/90000\r\n"
    b"a=framerate:25\r\n"
    b"a=fmtp:96 packetization-mode=1;sprop-parameter-sets=Z0LAFdkChH5cBagwMDUoAAADAAgAAAMBlHixckA=,"
    b"aMuMsg==;profile-level-id=42c015;level-asymmetry-allowed=1\r\n"
    b"a=control:stream=0\r\n"
    b"a=ts-refclk:local\r\n"
    b"a=mediaclk:sender\r\n"
    b"a=ssrc:996359364 cname:user2829669609@host-1d078aa3\r\n"
    b"m=audio 0 RTP/AVP 0\r\n"
    b"c=IN IP4 0.0.0.0\r\n"
    b"b=AS:64\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=control:stream=1\r\n"
    b"a=ts-refclk:local\r\n"
    b"a=mediaclk:sender\r\n"
    b"a=ssrc:1408231055 cname:user2829669609@host-1d078aa3\r\n"
)

# The shape live555 and Darwin Streaming Server use: absolute controls, live range.
LIVE_SDP = """v=0
o=- 1 1 IN IP4 10.0.0.5
s=Live
a=control:rtsp://10.0.0.5:554/live.sdp
a=range:npt=now-

m=video 0 RTP/AVP 96
a=rtpmap:96 H264/90000
a=control:rtsp://10.0.0.5:554/live.sdp/trackID=1
m=audio 0 RTP/AVP 97
a=rtpmap:97 MPEG4-GENERIC/44100/2
a=control:trackID=2
a=sendonly
"""


def test_gstreamer_sdp() -> None:
    sd = parse_sdp(GSTREAMER_SDP)
    assert len(sd.session_lines) == 9
    assert build_sdp(sd) == GSTREAMER_SDP
    assert sd.control == "*"
    assert sd.range == NptRange(0.0, None)
    assert sd.range_is_open and not sd.is_live
    video, audio = sd.media
    assert video.lines[0] == "m=video 0 RTP/AVP 96"
    assert (video.media_type, audio.media_type) == ("video", "audio")
    assert (video.control, audio.control) == ("stream=0", "stream=1")
    assert video.attributes("fmtp")[0].startswith("96 packetization-mode=1;")
    assert sd.attributes("tool") == ["GStreamer"]
    assert video.range is None


def test_live_sdp_lf_only_blank_lines_and_flags() -> None:
    sd = parse_sdp(LIVE_SDP)
    assert sd.is_live and sd.range_is_open
    assert sd.range == NptRange(live=True)
    assert sd.control == "rtsp://10.0.0.5:554/live.sdp"
    assert sd.media[1].attributes("sendonly") == [""]
    assert build_sdp(sd) == LIVE_SDP.replace("\n\n", "\n").replace("\n", "\r\n").encode()


def test_ranges_without_a_session_range() -> None:
    vod = parse_sdp("v=0\r\nm=video 0 RTP/AVP 96\r\na=range:npt=0-120.5\r\n")
    assert vod.range is None
    assert vod.media[0].range == NptRange(0.0, 120.5)
    assert not vod.range_is_open and not vod.is_live
    live = parse_sdp("v=0\r\nm=video 0 RTP/AVP 96\r\na=range:npt=now-\r\n")
    assert live.is_live and live.range_is_open
    unknown = parse_sdp("v=0\r\ns=x\r\nm=video 0 RTP/AVP 96\r\n")
    assert unknown.range is None and not unknown.is_live and not unknown.range_is_open
    clock = parse_sdp("v=0\r\na=range:clock=19961108T143720Z-\r\n")
    assert clock.range is None


def test_with_control_replaces_or_appends() -> None:
    sd = parse_sdp(GSTREAMER_SDP)
    new = sd.with_control("rtsp://proxy/test/")
    assert new.control == "rtsp://proxy/test/"
    assert new.session_lines.index("a=control:rtsp://proxy/test/") == 7
    assert new.media == sd.media
    bare = SessionDescription(("v=0", "s=x"), ())
    assert bare.with_control("*").session_lines == ("v=0", "s=x", "a=control:*")
    media = MediaDescription(("m=audio 0 RTP/AVP 0", "a=control:a", "a=control:b"))
    assert media.with_control("c").lines == ("m=audio 0 RTP/AVP 0", "a=control:c")
    assert MediaDescription(("m=audio 0 RTP/AVP 0",)).with_control("x").control == "x"
    with pytest.raises(LocalProtocolError):
        media.with_control("a\r\nb")


def test_rewrite_controls_only_touches_absolute_urls() -> None:
    sd = parse_sdp(LIVE_SDP)

    def to_proxy(url: str) -> str:
        return rebase_url(url, "rtsp://10.0.0.5/", "rtsp://proxy:8554/cam1/") or url

    out = rewrite_controls(sd, to_proxy)
    assert out.control == "rtsp://proxy:8554/cam1/live.sdp"
    assert out.media[0].control == "rtsp://proxy:8554/cam1/live.sdp/trackID=1"
    assert out.media[1].control == "trackID=2"
    assert rewrite_controls(parse_sdp(GSTREAMER_SDP), lambda u: "X") == parse_sdp(GSTREAMER_SDP)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\r\n\r\n", b"<html>hello</html>", b"v=0\r\nnot sdp\r\n", b"v=0\r\n=x\r\n", b"\x00"],
)
def test_garbage_is_rejected(bad: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_sdp(bad)
    assert info.value.status_hint == 400


def test_trailing_nul_and_non_utf8_are_tolerated() -> None:
    sd = parse_sdp(b"v=0\r\ns=Cam\xe9ra\r\n\x00")
    assert build_sdp(sd) == b"v=0\r\ns=Cam\xe9ra\r\n"


def test_build_refuses_bad_lines() -> None:
    with pytest.raises(LocalProtocolError):
        build_sdp(SessionDescription(("v=0", "bad"), ()))
    with pytest.raises(LocalProtocolError):
        build_sdp(SessionDescription(("v=0",), (MediaDescription(("a=x",)),)))


sdp_values = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r\n"), max_size=20
)
sdp_lines = st.builds(lambda t, v: f"{t}={v}", st.sampled_from("vosiucebtrzka"), sdp_values).filter(
    lambda line: line.strip() != ""
)
media_sections = st.builds(
    lambda kind, rest: MediaDescription((f"m={kind} 0 RTP/AVP 96", *rest)),
    st.sampled_from(["video", "audio", "application"]),
    st.lists(sdp_lines, max_size=5),
)


@given(st.lists(sdp_lines, min_size=1, max_size=8), st.lists(media_sections, max_size=3))
def test_sdp_round_trip(session: list[str], media: list[MediaDescription]) -> None:
    sd = SessionDescription(tuple(session), tuple(media))
    assert parse_sdp(build_sdp(sd)) == sd
