"""Validators of a cached clip (core/rtsp/caching.py): what the accounting DESCRIBE compares."""

from __future__ import annotations

import pytest

from mediacache.rtsp.caching import sdp_digest, still_valid, validators_of
from mediacache.rtsp.message import Headers

SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=clip\r\nt=0 0\r\na=range:npt=0-4.0\r\n"
    b"m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\na=ssrc:1234 cname:x\r\n"
    b"a=control:stream=0\r\n"
)
ETAG = ("ETag", '"v1"')
MODIFIED = ("Last-Modified", "Tue, 25 Nov 2025 10:00:00 GMT")


def test_validators_hold_etag_last_modified_and_the_sdp_digest() -> None:
    v = validators_of(Headers([ETAG, MODIFIED, ("Content-Type", "application/sdp")]), SDP)
    assert v == {"sdp-digest": sdp_digest(SDP), "etag": '"v1"', "last-modified": MODIFIED[1]}
    assert validators_of(Headers([]), SDP) == {"sdp-digest": sdp_digest(SDP)}


def test_the_digest_ignores_what_changes_per_request_only() -> None:
    per_request = SDP.replace(b"o=- 1 1", b"o=- 99 7").replace(b"ssrc:1234", b"ssrc:777")
    assert sdp_digest(per_request) == sdp_digest(SDP)
    assert sdp_digest(SDP.replace(b"npt=0-4.0", b"npt=0-3.0")) != sdp_digest(SDP)
    assert sdp_digest(SDP.replace(b"\r\n", b"\n")) == sdp_digest(SDP)


STORED = validators_of(Headers([ETAG, MODIFIED]), SDP)


@pytest.mark.parametrize(
    ("headers", "sdp", "valid"),
    [
        ([ETAG, MODIFIED], SDP, True),
        ([ETAG, MODIFIED], SDP.replace(b"o=- 1 1", b"o=- 2 2"), True),  # a new session id only
        ([("ETag", '"v2"'), MODIFIED], SDP, False),  # a new ETag, same SDP
        ([ETAG, ("Last-Modified", "Wed, 26 Nov 2025 10:00:00 GMT")], SDP, False),
        ([ETAG, MODIFIED], SDP.replace(b"npt=0-4.0", b"npt=0-3.0"), False),  # another clip
        ([], SDP, True),  # the origin stopped sending ETag/Last-Modified: the SDP decides
        ([], SDP.replace(b"H264", b"H265"), False),
    ],
)
def test_still_valid(headers: list[tuple[str, str]], sdp: bytes, valid: bool) -> None:
    assert still_valid(STORED, validators_of(Headers(headers), sdp)) is valid


def test_a_validator_the_stored_object_lacks_does_not_make_it_stale() -> None:
    """An object stored without an ETag stays valid when the origin starts sending one (it
    still has to match the SDP digest)."""
    stored = validators_of(Headers([]), SDP)
    assert still_valid(stored, validators_of(Headers([ETAG]), SDP))
    assert not still_valid(stored, validators_of(Headers([ETAG]), SDP + b"a=x\r\n"))
