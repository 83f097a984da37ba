"""RealChallenge: the response a Real client computes from the server's ``RealChallenge1``.

A RealServer sends ``RealChallenge1: <token>`` in its OPTIONS reply; the client answers in its
first SETUP with ``RealChallenge2: <response>, sd=<checksum>``. This is libavformat rdt.c's
``ff_rdt_calc_response_and_checksum`` (VLC's ``real_calc_response_and_checksum`` and
GStreamer's ``rtspreal`` carry the same code): the challenge, cut to 32 characters when it is 40
long and to 56 otherwise, is copied after an 8-byte key into a 64-byte zeroed block, XORed with
a 37-byte table, hashed with MD5; the response is the lowercase hex digest plus ``01d0a8e3`` and
the checksum is every fourth character of it. An origin uses it to check clients, a proxy to
answer an origin for a client it authenticates itself.
"""

from __future__ import annotations

import hashlib

from mediacache_realmedia.errors import RealProtocolError

__all__ = ["real_challenge_response"]

_KEY = bytes((0xA1, 0xE9, 0x14, 0x9D, 0x0E, 0x6B, 0x3B, 0x59))
_XOR_TABLE = bytes(
    (
        0x05, 0x18, 0x74, 0xD0, 0x0D, 0x09, 0x02, 0x53,
        0xC0, 0x01, 0x05, 0x05, 0x67, 0x03, 0x19, 0x70,
        0x08, 0x27, 0x66, 0x10, 0x10, 0x72, 0x08, 0x09,
        0x63, 0x11, 0x03, 0x71, 0x08, 0x08, 0x70, 0x02,
        0x10, 0x57, 0x05, 0x18, 0x54,
    )
)  # fmt: skip
_TAIL = "01d0a8e3"


def real_challenge_response(challenge1: str) -> tuple[str, str]:
    """(RealChallenge2 response, ``sd`` checksum) for a ``RealChallenge1`` value.

    The response is 40 characters (32 hex digits and ``01d0a8e3``), the checksum 8. Like the C
    code, the challenge ends at its first NUL. Raises :class:`RealProtocolError` for a challenge
    that is not latin-1 text (it comes from the wire as an RTSP header value).
    """
    try:
        raw = challenge1.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise RealProtocolError(f"RealChallenge1 is not latin-1 text: {exc}") from exc
    raw = raw.split(b"\x00", 1)[0]  # strlen()
    if len(raw) == 40:  # "what a hack..." (rdt.c)
        raw = raw[:32]
    elif len(raw) > 56:
        raw = raw[:56]
    block = bytearray(64)
    block[:8] = _KEY
    block[8 : 8 + len(raw)] = raw
    for i, x in enumerate(_XOR_TABLE):
        block[8 + i] ^= x
    response = hashlib.md5(bytes(block)).hexdigest() + _TAIL
    checksum = response[0:32:4]
    return response, checksum
