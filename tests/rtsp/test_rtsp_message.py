"""Headers, Request/Response events and their serialisers."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError
from mediacache.rtsp import (
    REASONS,
    Headers,
    InterleavedFrame,
    Request,
    Response,
    RtspReader,
    build_message,
    build_request,
    build_response,
    make_response,
)


def parse_one(data: bytes) -> Request | Response | InterleavedFrame:
    reader = RtspReader()
    reader.receive_data(data)
    [event] = list(reader.events())
    return event


H = Headers([("CSeq", "1"), ("Via", "a"), ("Accept", "x"), ("via", "b")])


def test_headers_lookup_is_case_insensitive_and_ordered() -> None:
    assert H.get("cseq") == "1"
    assert H["VIA"] == "a"
    assert H.get_all("Via") == ["a", "b"]
    assert H.get("Missing") is None
    assert H.get("Missing", "d") == "d"
    assert "ACCEPT" in H and "Session" not in H and 3 not in H
    assert list(H) == H.items() == [("CSeq", "1"), ("Via", "a"), ("Accept", "x"), ("via", "b")]
    assert len(H) == 4
    with pytest.raises(KeyError):
        H["Missing"]


def test_headers_are_immutable_and_edits_return_copies() -> None:
    with pytest.raises(AttributeError):
        H._pairs = ()  # type: ignore[misc]
    assert H.with_("VIA", "c").items() == [("CSeq", "1"), ("VIA", "c"), ("Accept", "x")]
    assert H.with_("Session", "s").items()[-1] == ("Session", "s")
    assert H.without("via").items() == [("CSeq", "1"), ("Accept", "x")]
    assert H.add("Via", "c").get_all("via") == ["a", "b", "c"]
    assert H.get_all("via") == ["a", "b"]


def test_headers_equality_and_hash() -> None:
    assert Headers([("CSeq", "1")]) == Headers([("cseq", "1")])
    assert hash(Headers([("CSeq", "1")])) == hash(Headers([("cseq", "1")]))
    assert Headers([("CSeq", "1")]) != Headers([("CSeq", "2")])
    assert Headers([("A", "1"), ("B", "2")]) != Headers([("B", "2"), ("A", "1")])
    assert Headers() != [("A", "1")]
    assert repr(Headers([("A", "1")])) == "Headers([('A', '1')])"


def test_events_are_frozen_slotted_dataclasses() -> None:
    req = Request("OPTIONS", "*", Headers())
    with pytest.raises(dataclasses.FrozenInstanceError):
        req.method = "PLAY"  # type: ignore[misc]
    assert not hasattr(req, "__dict__")
    assert dataclasses.replace(req, uri="rtsp://h/").uri == "rtsp://h/"


def test_build_request_golden() -> None:
    req = Request(
        "DESCRIBE",
        "rtsp://127.0.0.1:8554/test",
        Headers([("Accept", "application/sdp"), ("CSeq", "2"), ("User-Agent", "Lavf59.27.100")]),
    )
    assert build_request(req) == (
        b"DESCRIBE rtsp://127.0.0.1:8554/test RTSP/1.0\r\n"
        b"Accept: application/sdp\r\nCSeq: 2\r\nUser-Agent: Lavf59.27.100\r\n\r\n"
    )


def test_content_length_is_set_replaced_or_left_out() -> None:
    with_body = Response(200, "OK", Headers([("Content-Length", "99"), ("CSeq", "2")]), b"v=0\r\n")
    assert build_response(with_body) == (
        b"RTSP/1.0 200 OK\r\nContent-Length: 5\r\nCSeq: 2\r\n\r\nv=0\r\n"
    )
    appended = Response(200, "OK", Headers([("CSeq", "2")]), b"abc")
    assert build_response(appended).endswith(b"CSeq: 2\r\nContent-Length: 3\r\n\r\nabc")
    empty = Response(200, "OK", Headers([("CSeq", "2")]))
    assert b"Content-Length" not in build_response(empty)
    zero = Response(200, "OK", Headers([("CSeq", "2"), ("Content-Length", "0")]))
    assert build_response(zero).endswith(b"Content-Length: 0\r\n\r\n")
    stale = Response(200, "OK", Headers([("Content-Length", "12")]))
    assert b"Content-Length: 0\r\n" in build_response(stale)


def test_make_response_puts_cseq_first() -> None:
    resp = make_response(454, 7, [("Server", "mediacache")])
    assert resp == Response(
        454, "Session Not Found", Headers([("CSeq", "7"), ("Server", "mediacache")])
    )
    assert resp.cseq == 7
    assert make_response(200, None).headers == Headers()
    assert make_response(299, 1).reason == "Unknown"
    assert make_response(200, 1, reason="Fine").reason == "Fine"
    resp = make_response(200, 3, [("Content-Type", "application/sdp")], b"v=0\r\n")
    assert parse_one(build_response(resp)).body == b"v=0\r\n"


def test_reasons_table() -> None:
    assert REASONS[200] == "OK"
    assert REASONS[453] == "Not Enough Bandwidth"
    assert REASONS[455] == "Method Not Valid in This State"
    assert REASONS[457] == "Invalid Range"
    assert REASONS[461] == "Unsupported transport"
    assert REASONS[551] == "Option not supported"
    for code in (400, 401, 403, 404, 405, 406, 408, 413, 414, 451, 454, 459, 460, 462):
        assert code in REASONS
    for code in (500, 501, 502, 503, 504, 505):
        assert code in REASONS


@pytest.mark.parametrize(
    "event",
    [
        Request("BAD METHOD", "*", Headers()),
        Request("OPTIONS", "rtsp://h/a b", Headers()),
        Request("OPTIONS", "", Headers()),
        Request("OPTIONS", "*", Headers(), version="RTSP 1.0"),
        Request("OPTIONS", "*", Headers([("Bad Name", "x")])),
        Request("OPTIONS", "*", Headers([("X", "a\r\nInjected: 1")])),
        Request("OPTIONS", "*", Headers([("X", "a\nb")])),
        Response(99, "x", Headers()),
        Response(1000, "x", Headers()),
        Response(200, "OK\r\nX: y", Headers()),
        InterleavedFrame(256, b""),
        InterleavedFrame(0, bytes(65536)),
    ],
)
def test_builders_refuse_what_would_corrupt_the_stream(event: object) -> None:
    with pytest.raises(LocalProtocolError):
        build_message(event)  # type: ignore[arg-type]


def test_non_utf8_bytes_survive_a_round_trip() -> None:
    raw = b"RTSP/1.0 200 OK\r\nServer: Cam\xe9ra 1.0\r\nCSeq: 1\r\n\r\n"
    resp = parse_one(raw)
    assert isinstance(resp, Response)
    assert build_response(resp) == raw


names = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-", min_size=1, max_size=10)
pairs = st.lists(st.tuples(names, st.text(max_size=5)), max_size=8)


@given(pairs, names, st.text(max_size=5))
def test_headers_with_keeps_one_at_the_first_position(items: list, name: str, value: str) -> None:
    h = Headers(items).with_(name, value)
    assert h.get_all(name) == [value]
    before = [p for p in items if p[0].lower() != name.lower()]
    assert [p for p in h if p[0].lower() != name.lower()] == before
    first = next((i for i, p in enumerate(items) if p[0].lower() == name.lower()), None)
    position = [p[0].lower() for p in h].index(name.lower())
    if first is None:
        assert position == len(h) - 1
    else:
        assert position == sum(1 for p in items[:first] if p[0].lower() != name.lower())


@given(pairs, names)
def test_headers_without_and_add(items: list, name: str) -> None:
    h = Headers(items)
    assert name not in h.without(name)
    assert len(h.without(name)) == len(h) - len(h.get_all(name))
    assert h.add(name, "v").get_all(name) == [*h.get_all(name), "v"]
    assert Headers(list(h)) == h
