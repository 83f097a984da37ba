"""Transport, Session, Range, RTP-Info, CSeq and Public headers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError, RemoteProtocolError
from mediacache.rtsp import (
    NptRange,
    RtpInfo,
    SessionHeader,
    TransportSpec,
    build_range,
    build_rtp_info,
    build_session,
    build_transports,
    parse_cseq,
    parse_public,
    parse_range,
    parse_rtp_info,
    parse_session,
    parse_transports,
)

# -- Transport ---------------------------------------------------------------------------------


def test_transport_gstreamer_tcp_reply() -> None:
    value = 'RTP/AVP/TCP;unicast;interleaved=0-1;ssrc=3B633CC4;mode="PLAY"'
    [spec] = parse_transports(value)
    assert spec == TransportSpec(
        "RTP/AVP/TCP", unicast=True, interleaved=(0, 1), ssrc="3B633CC4", mode="PLAY"
    )
    assert spec.lower_transport == "TCP"
    assert spec.build() == value


def test_transport_list_in_preference_order() -> None:
    value = (
        "RTP/AVP/TCP;unicast;interleaved=0-1, RTP/AVP;unicast;client_port=5000-5001,"
        "RTP/AVP;multicast;destination=224.2.0.1;port=3456-3457;ttl=16"
    )
    tcp, udp, multicast = parse_transports(value)
    assert (tcp.lower_transport, tcp.interleaved) == ("TCP", (0, 1))
    assert (udp.lower_transport, udp.client_port) == ("UDP", (5000, 5001))
    assert multicast.unicast is False
    assert multicast.destination == "224.2.0.1"
    assert multicast.ttl == 16
    assert multicast.extra == (("port", "3456-3457"),)
    assert multicast.build() == "RTP/AVP;multicast;destination=224.2.0.1;ttl=16;port=3456-3457"
    assert parse_transports(build_transports([tcp, udp, multicast])) == [tcp, udp, multicast]


def test_transport_keeps_protocol_spelling_and_unknown_params() -> None:
    [spec] = parse_transports('x-pn-tng/tcp;mode=play;interleaved=0;append;x-foo="a;b,c"')
    assert spec.protocol == "x-pn-tng/tcp"
    assert spec.lower_transport == "TCP"
    assert spec.mode == "play"
    assert spec.interleaved == (0, 0)  # a single channel stays single; the caller decides
    assert spec.extra == (("append", None), ("x-foo", '"a;b,c"'))
    assert spec.build() == 'x-pn-tng/tcp;interleaved=0;mode="play";append;x-foo="a;b,c"'
    assert parse_transports(spec.build()) == [spec]


def test_transport_canonical_order_and_replace() -> None:
    [spec] = parse_transports(
        "RTP/AVP/UDP;ttl=3;mode=PLAY;ssrc=1;server_port=6;client_port=4-5;source=s;"
        "destination=d;unicast"
    )
    assert spec.build() == (
        "RTP/AVP/UDP;unicast;destination=d;source=s;client_port=4-5;server_port=6;ssrc=1;"
        'mode="PLAY";ttl=3'
    )
    tcp = dataclasses.replace(spec, protocol="RTP/AVP/TCP", client_port=None, interleaved=(2, 3))
    assert tcp.lower_transport == "TCP"
    assert "interleaved=2-3" in tcp.build()


def test_transport_is_lenient_about_spacing_and_case() -> None:
    [spec] = parse_transports(" RTP/AVP ; Unicast ; CLIENT_PORT = 8000-8001 ;")
    assert spec.unicast is True
    assert spec.client_port == (8000, 8001)
    assert spec.lower_transport == "UDP"
    assert parse_transports("rtp/avp/tcp;interleaved=0-1")[0].lower_transport == "TCP"


@pytest.mark.parametrize(
    ("value", "status"),
    [
        ("", 461),
        (" , ", 461),
        ("RTP", 461),
        ("RTP/AVP/;unicast", 461),
        ("unicast;RTP/AVP", 461),
        ("RTP/AVP;client_port=70000-70001", 400),
        ("RTP/AVP;client_port=a-b", 400),
        ("RTP/AVP;client_port=", 400),
        ("RTP/AVP/TCP;interleaved=256-257", 400),
        ("RTP/AVP/TCP;interleaved=0-1;interleaved=2-3", 400),
        ("RTP/AVP;unicast;multicast", 400),
        ("RTP/AVP;ttl=x", 400),
        ("RTP/AVP;mode=", 400),
        ("RTP/AVP;b@d=1", 400),
    ],
)
def test_transport_errors(value: str, status: int) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_transports(value)
    assert info.value.status_hint == status


@pytest.mark.parametrize(
    "spec",
    [
        TransportSpec("RTP"),
        TransportSpec("RTP/AVP", client_port=(70000, 70001)),
        TransportSpec("RTP/AVP", interleaved=(0, 256)),
        TransportSpec("RTP/AVP", ssrc="a;b"),
        TransportSpec("RTP/AVP", destination="a,b"),
        TransportSpec("RTP/AVP", mode='"x"'),
        TransportSpec("RTP/AVP", ttl=300),
        TransportSpec("RTP/AVP", extra=(("interleaved", "0-1"),)),
        TransportSpec("RTP/AVP", extra=(("unicast", None),)),
        TransportSpec("RTP/AVP", extra=(("x", "a;b"),)),
        TransportSpec("RTP/AVP", extra=(("bad name", None),)),
    ],
)
def test_transport_build_refuses_corrupting_values(spec: TransportSpec) -> None:
    with pytest.raises(LocalProtocolError):
        spec.build()


port_pairs = st.tuples(st.integers(0, 65535), st.integers(0, 65535))
words = st.text("abcdefghijklmnopqrstuvwxyzABCDEF0123456789.:-_", min_size=1, max_size=12)
extra_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789_-", min_size=1, max_size=12).filter(
    lambda s: (
        s[0].isalnum()
        and s.lower()
        not in {"unicast", "multicast", "destination", "source", "interleaved", "client_port"}
        and s.lower() not in {"server_port", "ssrc", "mode", "ttl"}
    )
)
transport_specs = st.builds(
    TransportSpec,
    protocol=st.sampled_from(["RTP/AVP", "RTP/AVP/TCP", "RTP/AVP/UDP", "x-pn-tng/tcp", "RTP/SAVP"]),
    unicast=st.none() | st.booleans(),
    interleaved=st.none() | st.tuples(st.integers(0, 255), st.integers(0, 255)),
    client_port=st.none() | port_pairs,
    server_port=st.none() | port_pairs,
    ssrc=st.none() | words,
    mode=st.none() | words | st.just("PLAY,RECORD"),
    destination=st.none() | words,
    source=st.none() | words,
    ttl=st.none() | st.integers(0, 255),
    extra=st.lists(st.tuples(extra_names, st.none() | words), max_size=3).map(tuple),
)


@given(st.lists(transport_specs, min_size=1, max_size=3))
def test_transport_round_trip(specs: list[TransportSpec]) -> None:
    assert parse_transports(build_transports(specs)) == specs


# -- Session -----------------------------------------------------------------------------------


def test_session() -> None:
    assert parse_session("6pcVyfbU9nzQd4lT;timeout=60") == SessionHeader("6pcVyfbU9nzQd4lT", 60)
    assert parse_session(" 47112344 ") == SessionHeader("47112344")
    assert parse_session("abc; Timeout = 30 ;foo=bar").timeout == 30
    assert SessionHeader("abc", 30).build() == "abc;timeout=30"
    assert build_session(SessionHeader("abc")) == "abc"
    for bad in ("", ";timeout=3", "a b", "abc;timeout=x", "abc;timeout=-1"):
        with pytest.raises(RemoteProtocolError) as info:
            parse_session(bad)
        assert info.value.status_hint == 400
    with pytest.raises(LocalProtocolError):
        SessionHeader("a;b").build()


@given(
    st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789$-_.+", min_size=1),
    st.none() | st.integers(0, 2**31 - 1),
)
def test_session_round_trip(session_id: str, timeout: int | None) -> None:
    session = SessionHeader(session_id, timeout)
    assert parse_session(session.build()) == session


# -- Range -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("npt=0-", NptRange(0.0, None)),
        ("npt=0.000-", NptRange(0.0, None)),
        ("npt=10.5-20", NptRange(10.5, 20.0)),
        ("npt=now-", NptRange(None, None, live=True)),
        ("npt=-20", NptRange(None, 20.0)),
        ("npt=1:02:03.5-", NptRange(3723.5, None)),
        ("npt=00:00:10-00:01:00", NptRange(10.0, 60.0)),
        ("npt=5.-", NptRange(5.0, None)),
        ("NPT = 1 - 2 ;time=19970123T153600Z", NptRange(1.0, 2.0)),
    ],
)
def test_range(value: str, expected: NptRange) -> None:
    assert parse_range(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "clock=19961108T143720.25Z-",
        "smpte=10:07:33-",
        "npt",
        "npt=",
        "npt=-",
        "npt=abc-",
        "npt=1:60:00-",
        "npt=20-10",
        "npt=1-2-3",
        "bytes=0-",
    ],
)
def test_range_errors_are_457(value: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        parse_range(value)
    assert info.value.status_hint == 457


def test_range_build() -> None:
    assert NptRange(0.0).build() == "npt=0.000-"
    assert NptRange(10.5, 20.0).build() == "npt=10.500-20.000"
    assert build_range(NptRange(live=True)) == "npt=now-"
    assert NptRange(None, 20.0).build() == "npt=-20.000"
    for bad in (NptRange(), NptRange(1.0, live=True), NptRange(-1.0), NptRange(float("nan"))):
        with pytest.raises(LocalProtocolError):
            bad.build()


millis = st.integers(0, 10**9).map(lambda k: k / 1000)


@st.composite
def npt_ranges(draw: st.DrawFn) -> NptRange:
    kind = draw(st.sampled_from(["from", "between", "to", "live"]))
    a, b = sorted((draw(millis), draw(millis)))
    if kind == "from":
        return NptRange(a)
    if kind == "between":
        return NptRange(a, b)
    if kind == "to":
        return NptRange(None, b)
    return NptRange(None, draw(st.none() | millis), live=True)


@given(npt_ranges())
def test_range_round_trip(rng: NptRange) -> None:
    assert parse_range(rng.build()) == rng


# -- RTP-Info ----------------------------------------------------------------------------------


def test_rtp_info_gstreamer() -> None:
    value = (
        "url=rtsp://127.0.0.1:8554/test/stream=0;seq=1;rtptime=0, "
        "url=rtsp://127.0.0.1:8554/test/stream=1;seq=6003;rtptime=1202957439"
    )
    assert parse_rtp_info(value) == [
        RtpInfo("rtsp://127.0.0.1:8554/test/stream=0", 1, 0),
        RtpInfo("rtsp://127.0.0.1:8554/test/stream=1", 6003, 1202957439),
    ]
    assert build_rtp_info(parse_rtp_info(value)) == value


def test_rtp_info_urls_with_separators_and_missing_params() -> None:
    value = (
        "url=rtsp://h/a;jsessionid=1,2/trackID=1;seq=5,url=rtsp://h/a?x=1,2;y/trackID=2;"
        "rtptime=9,url=trackID=3"
    )
    assert parse_rtp_info(value) == [
        RtpInfo("rtsp://h/a;jsessionid=1,2/trackID=1", 5, None),
        RtpInfo("rtsp://h/a?x=1,2;y/trackID=2", None, 9),
        RtpInfo("trackID=3"),
    ]
    assert parse_rtp_info('url="rtsp://h/x";SEQ=1 ; RtpTime=2') == [RtpInfo("rtsp://h/x", 1, 2)]


@pytest.mark.parametrize(
    "value", ["", "seq=1", "url=;seq=1", "url=rtsp://h/;seq=70000", "url=x;rtptime=4294967296"]
)
def test_rtp_info_errors(value: str) -> None:
    with pytest.raises(RemoteProtocolError):
        parse_rtp_info(value)


def test_rtp_info_build_refuses_ambiguous_urls() -> None:
    for url in ("", "rtsp://h/a b", "rtsp://h/a;seq=1", "rtsp://h/a,url=b"):
        with pytest.raises(LocalProtocolError):
            RtpInfo(url, 1).build()


url_chars = st.text("abcdefghijklmnopqrstuvwxyz0123456789/:;,=?&.-_%", min_size=1, max_size=30).map(
    lambda s: "rtsp://h/" + s
)


@given(
    st.lists(
        st.builds(
            RtpInfo,
            url_chars,
            st.none() | st.integers(0, 0xFFFF),
            st.none() | st.integers(0, 0xFFFFFFFF),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_rtp_info_round_trip(infos: list[RtpInfo]) -> None:
    try:
        value = build_rtp_info(infos)
    except LocalProtocolError:
        return  # an ambiguous URL, refused on purpose
    assert parse_rtp_info(value) == infos


# -- CSeq, Public ------------------------------------------------------------------------------


def test_cseq() -> None:
    assert parse_cseq("1") == 1
    assert parse_cseq(" 42 ") == 42
    for bad in ("", "x", "-1", "1.0", "4294967296", "\u0661"):
        with pytest.raises(RemoteProtocolError):
            parse_cseq(bad)


def test_public() -> None:
    value = "OPTIONS, DESCRIBE, ANNOUNCE, GET_PARAMETER, PAUSE, PLAY, RECORD, SETUP,TEARDOWN,"
    assert parse_public(value) == [
        "OPTIONS",
        "DESCRIBE",
        "ANNOUNCE",
        "GET_PARAMETER",
        "PAUSE",
        "PLAY",
        "RECORD",
        "SETUP",
        "TEARDOWN",
    ]
    assert parse_public("") == []
