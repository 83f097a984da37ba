"""RtspReader: framing, tolerance, limits, poisoning, and chunking independence."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mediacache.errors import ProtocolError, RemoteProtocolError
from mediacache.rtsp import (
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    build_interleaved,
    build_request,
    build_response,
)

OPTIONS = b"OPTIONS rtsp://example.com/media.mp4 RTSP/1.0\r\nCSeq: 1\r\n\r\n"
ANNOUNCE = (
    b"ANNOUNCE rtsp://h/x RTSP/1.0\r\nCSeq: 7\r\nContent-Type: application/sdp\r\n"
    b"Content-Length: 12\r\n\r\nv=0\r\ns=x\r\nt="
)


def feed(data: bytes, reader: RtspReader | None = None) -> list:
    reader = reader or RtspReader()
    reader.receive_data(data)
    return list(reader.events())


def outcome(chunks: list[bytes], **limits: int) -> tuple[list, int | None]:
    """Events until the first error, and that error's status hint (None when no error)."""
    reader = RtspReader(**limits)
    events: list = []
    try:
        for chunk in chunks:
            reader.receive_data(chunk)
            events.extend(reader.events())
    except ProtocolError as exc:
        assert isinstance(exc, RemoteProtocolError)
        return events, exc.status_hint
    return events, None


def test_request_with_and_without_body() -> None:
    [options, announce] = feed(OPTIONS + ANNOUNCE)
    assert options == Request("OPTIONS", "rtsp://example.com/media.mp4", Headers([("CSeq", "1")]))
    assert announce.method == "ANNOUNCE"
    assert announce.body == b"v=0\r\ns=x\r\nt="
    assert announce.cseq == 7


def test_response_with_reason_containing_spaces_and_empty_reason() -> None:
    [a, b] = feed(
        b"RTSP/1.0 455 Method Not Valid in This State\r\nCSeq: 3\r\n\r\n"
        b"RTSP/1.0 200\r\nCSeq: 4\r\n\r\n"
    )
    assert (a.status, a.reason, a.cseq) == (455, "Method Not Valid in This State", 3)
    assert (b.status, b.reason) == (200, "")


def test_lf_only_line_endings_and_stray_crlf_between_messages() -> None:
    data = b"\r\n\r\nOPTIONS * RTSP/1.0\nCSeq: 2\n\n\r\n" + OPTIONS + b"\n"
    events = feed(data)
    assert [(e.uri, e.cseq) for e in events] == [("*", 2), ("rtsp://example.com/media.mp4", 1)]


def test_interleaved_frames_between_messages() -> None:
    data = build_interleaved(0, b"rtp") + OPTIONS + build_interleaved(1, b"") + b"\r\n"
    data += build_interleaved(255, bytes(65535))
    events = feed(data)
    assert events[0] == InterleavedFrame(0, b"rtp")
    assert isinstance(events[1], Request)
    assert events[2] == InterleavedFrame(1, b"")
    assert events[3] == InterleavedFrame(255, bytes(65535))


def test_dollar_inside_a_body_is_body() -> None:
    body = b"$\x00\x00\x01x"
    req = Request("SET_PARAMETER", "rtsp://h/", Headers([("CSeq", "2")]), body)
    [parsed] = feed(build_request(req))
    assert parsed.body == body


def test_incomplete_input_returns_none_and_keeps_bytes() -> None:
    reader = RtspReader()
    reader.receive_data(b"$\x00\x00\x05ab")
    assert reader.next_event() is None
    assert reader.buffered == 6
    reader.receive_data(b"cde" + OPTIONS[:10])
    assert reader.next_event() == InterleavedFrame(0, b"abcde")
    assert reader.next_event() is None
    reader.receive_data(OPTIONS[10:])
    assert isinstance(reader.next_event(), Request)
    assert reader.next_event() is None
    assert reader.buffered == 0


def test_missing_or_bad_cseq_is_not_a_parser_error() -> None:
    [req] = feed(b"OPTIONS * RTSP/1.0\r\nUser-Agent: x\r\n\r\n")
    assert req.cseq is None
    [req] = feed(b"OPTIONS * RTSP/1.0\r\nCSeq: one\r\n\r\n")
    assert req.cseq is None
    [resp] = feed(b"RTSP/1.0 200 OK\r\nCSeq:  12 \r\n\r\n")
    assert resp.cseq == 12


def test_header_values_are_trimmed_and_names_case_insensitive() -> None:
    [req] = feed(b"PLAY rtsp://h/ RTSP/1.0\r\ncseq:5\r\nsession: \t abc \t\r\n\r\n")
    assert req.headers.get("Session") == "abc"
    assert req.cseq == 5


def test_rtsp_1_x_accepted() -> None:
    [req] = feed(b"OPTIONS * RTSP/1.1\r\n\r\n")
    assert req.version == "RTSP/1.1"


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"OPTIONS * HTTP/1.1\r\n\r\n", 505),
        (b"OPTIONS * RTSP/2.0\r\n\r\n", 505),
        (b"RTSP/2.0 200 OK\r\n\r\n", 505),
        (b"GET / HTTP/1.0 extra\r\n\r\n", 400),
        (b"OPTIONS *\r\n\r\n", 400),
        (b"OPTIONS  * RTSP/1.0\r\n\r\n", 400),
        (b"OPT(ONS * RTSP/1.0\r\n\r\n", 400),
        (b"OPTIONS * RTSP/x\r\n\r\n", 400),
        (b"RTSP/1.0 2000 OK\r\n\r\n", 400),
        (b"RTSP/1.0 abc OK\r\n\r\n", 400),
        (b"HTTP/1.1 200 OK\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nCSeq 1\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nCSeq : 1\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\n: 1\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nX: a\rb\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nX: a\x00b\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nX: a\r\n  folded\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nX: a\r\n\tfolded\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: -1\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: 1x\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: \r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: \xd9\xa1\r\n\r\n", 400),  # Arabic-Indic 1
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: 1000000000\r\n\r\n", 413),
        (b"OPTIONS * RTSP/1.0\r\nContent-Length: 99999999999999999999999\r\n\r\n", 413),
        (b"\x00\x01\x02\r\n\r\n", 400),
    ],
)
def test_errors_and_status_hints(data: bytes, status: int) -> None:
    assert outcome([data]) == ([], status)


def test_duplicate_equal_content_length_is_accepted() -> None:
    [req] = feed(b"X * RTSP/1.0\r\nContent-Length: 2\r\ncontent-length: 2\r\n\r\nab")
    assert req.body == b"ab"


def test_long_request_line_fails_early_with_414() -> None:
    reader = RtspReader()
    reader.receive_data(b"DESCRIBE rtsp://h/")
    fed = 0
    with pytest.raises(RemoteProtocolError) as info:
        for _ in range(1024):  # up to 1 MB, 1 KB at a time
            reader.receive_data(b"a" * 1024)
            fed += 1024
            reader.next_event()
    assert info.value.status_hint == 414
    assert fed <= 9 * 1024


def test_long_status_line_and_header_line_fail_early_with_400() -> None:
    for prefix in (b"RTSP/1.0 200 ", b"OPTIONS * RTSP/1.0\r\nX-Long: "):
        reader = RtspReader()
        reader.receive_data(prefix)
        with pytest.raises(RemoteProtocolError) as info:
            for _ in range(1024):
                reader.receive_data(b"a" * 1024)
                assert reader.next_event() is None
        assert info.value.status_hint == 400
        assert reader.buffered < 10 * 1024


def test_line_of_exactly_max_line_is_accepted() -> None:
    line = b"X-A: " + b"a" * 95
    assert len(line) == 100
    assert outcome([b"OPTIONS * RTSP/1.0\r\n" + line + b"\r\n\r\n"], max_line=100)[1] is None
    assert outcome([b"OPTIONS * RTSP/1.0\r\n" + line + b"a\r\n\r\n"], max_line=100)[1] == 400
    # The CR of a CRLF may arrive without its LF: that is not yet too long.
    reader = RtspReader(max_line=100)
    reader.receive_data(b"OPTIONS * RTSP/1.0\r\n" + line + b"\r")
    assert reader.next_event() is None
    reader.receive_data(b"\n\r\n")
    assert isinstance(reader.next_event(), Request)


def test_too_many_headers_fail_early() -> None:
    reader = RtspReader()
    reader.receive_data(b"OPTIONS * RTSP/1.0\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        for i in range(10_000):
            reader.receive_data(b"X-H: %d\r\n" % i)
            assert reader.next_event() is None
    assert info.value.status_hint == 400
    assert "header" in str(info.value)
    headers = b"".join(b"X-H: %d\r\n" % i for i in range(10_000))
    assert outcome([b"OPTIONS * RTSP/1.0\r\n" + headers + b"\r\n"]) == ([], 400)
    ok = b"".join(b"X-H: %d\r\n" % i for i in range(100))
    assert outcome([b"OPTIONS * RTSP/1.0\r\n" + ok + b"\r\n"])[1] is None


def test_huge_content_length_fails_before_the_body_arrives() -> None:
    reader = RtspReader()
    reader.receive_data(b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 1000000000\r\n\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        reader.next_event()
    assert info.value.status_hint == 413


def test_body_limit_is_configurable() -> None:
    msg = b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 11\r\n\r\nhello world"
    assert outcome([msg], max_body=10) == ([], 413)
    assert outcome([msg], max_body=11)[0][0].body == b"hello world"


def test_reader_is_poisoned_after_an_error() -> None:
    reader = RtspReader()
    reader.receive_data(b"BAD\r\n\r\n" + OPTIONS)
    with pytest.raises(RemoteProtocolError) as first:
        reader.next_event()
    with pytest.raises(RemoteProtocolError) as again:
        reader.next_event()
    assert again.value is first.value
    with pytest.raises(RemoteProtocolError):
        reader.receive_data(OPTIONS)
    with pytest.raises(RemoteProtocolError):
        list(reader.events())


def test_trickled_body_is_linear() -> None:
    """Feeding a 1 MB body one 16-byte chunk at a time must stay fast (no rescans or copies)."""
    body = bytes(1_000_000)
    reader = RtspReader()
    reader.receive_data(b"ANNOUNCE * RTSP/1.0\r\nContent-Length: 1000000\r\n\r\n")
    for i in range(0, len(body), 16):
        reader.receive_data(body[i : i + 16])
        if reader.next_event() is not None:
            break
    else:
        pytest.fail("body never completed")
    assert reader.buffered == 0


# -- properties --------------------------------------------------------------------------------

tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.!", min_size=1)
values = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x85\u2028\u2029"),
    max_size=30,
).map(lambda s: s.strip(" \t"))
header_lists = st.lists(
    st.tuples(tokens.filter(lambda n: n.lower() != "content-length"), values), max_size=8
)
bodies = st.binary(max_size=300)


@st.composite
def requests(draw: st.DrawFn) -> Request:
    body = draw(bodies)
    headers = Headers(draw(header_lists))
    if body:
        headers = headers.with_("Content-Length", str(len(body)))
    uri = draw(st.sampled_from(["*", "rtsp://h/a", "rtsp://[::1]:8554/x?y=1;z", "/rel"]))
    version = draw(st.sampled_from(["RTSP/1.0", "RTSP/1.1"]))
    return Request(draw(tokens), uri, headers, body, version)


@st.composite
def responses(draw: st.DrawFn) -> Response:
    body = draw(bodies)
    headers = Headers(draw(header_lists))
    if body:
        headers = headers.with_("Content-Length", str(len(body)))
    reason = draw(values)
    return Response(draw(st.integers(100, 999)), reason, headers, body)


frames = st.builds(InterleavedFrame, st.integers(0, 255), st.binary(max_size=300))
events = st.one_of(requests(), responses(), frames)


def serialise(event: Request | Response | InterleavedFrame) -> bytes:
    if isinstance(event, Request):
        return build_request(event)
    if isinstance(event, Response):
        return build_response(event)
    return build_interleaved(event.channel, event.payload)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@given(st.lists(events, max_size=6), st.lists(st.integers(0, 10_000), max_size=12))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_any_chunking(evs: list, cuts: list[int]) -> None:
    data = b"".join(serialise(e) for e in evs)
    assert outcome(chunked(data, cuts)) == (evs, None)


LIMITS = {"max_line": 64, "max_headers": 4, "max_body": 100}


@given(st.binary(max_size=400), st.lists(st.integers(0, 10_000), max_size=10))
@example(b"$\x00\x00", [1])
@example(b"RTSP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nab", [5, 30])
def test_garbage_only_raises_protocol_errors_and_chunking_is_irrelevant(
    data: bytes, cuts: list[int]
) -> None:
    """Random bytes never crash the reader with anything but a ProtocolError, and any chunking
    yields the same events and the same error as feeding everything at once."""
    whole = outcome([data], **LIMITS)
    assert outcome(chunked(data, cuts), **LIMITS) == whole
    assert outcome([bytes([b]) for b in data], **LIMITS) == whole


@given(st.binary(max_size=120))
def test_garbage_split_at_every_position(data: bytes) -> None:
    whole = outcome([data], **LIMITS)
    for i in range(len(data) + 1):
        assert outcome([data[:i], data[i:]], **LIMITS) == whole


fragments = st.one_of(
    st.sampled_from(
        [
            b"\r\n",
            b"\n",
            b"$",
            b"RTSP/1.0 200 OK\r\n",
            b"OPTIONS * RTSP/1.0\r\n",
            b"CSeq: 1\r\n",
            b"Content-Length: 4\r\n",
            b"Content-Length: 999\r\n",
            b" folded\r\n",
            b"\r\n\r\n",
            b"$\x01\x00\x02ab",
        ]
    ),
    st.binary(max_size=20),
)


@given(st.lists(fragments, max_size=12))
def test_structured_garbage_splitting_at_every_position(parts: list[bytes]) -> None:
    """Near-valid input, split once at every possible position, gives the same outcome."""
    data = b"".join(parts)
    whole = outcome([data], max_line=40, max_headers=3, max_body=100)
    for i in range(len(data) + 1):
        assert outcome([data[:i], data[i:]], max_line=40, max_headers=3, max_body=100) == whole
