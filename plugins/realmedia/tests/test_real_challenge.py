"""RealChallenge2: vectors that real clients computed, and the algorithm's edge rules.

The two vectors below were captured from the ``RealChallenge2`` header real clients sent to a
test server (ffmpeg 5.1 for the first; GStreamer 1.22 ``rtspreal`` and VLC 3.0 ``realrtsp``
for the second). test_real_clients.py repeats that capture live for more challenge lengths.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.errors import RealProtocolError

CLIENT_VECTORS = [
    # (RealChallenge1, response, sd) as sent by ffmpeg 5.1
    ("31c0a0fd24c8c4a0fd24c8c4a0fd24c8", "7581056b9451f6d07df199e4c12c568001d0a8e3", "709f79c5"),
    # as sent by GStreamer 1.22 and VLC 3.0 (a 40-character challenge: only 32 are used)
    ("abcdef0123456789abcdef0123456789abcdef01", "ede4aad2e199edadeff4ae9ae7f6d2f301d0a8e3",
     "eaeeeaed"),
]  # fmt: skip


@pytest.mark.parametrize(("challenge", "response", "sd"), CLIENT_VECTORS)
def test_vectors_from_real_clients(challenge: str, response: str, sd: str) -> None:
    assert real_challenge_response(challenge) == (response, sd)


def test_length_rules() -> None:
    forty = "0123456789" * 4
    assert real_challenge_response(forty) == real_challenge_response(forty[:32])
    assert real_challenge_response(forty[:39]) != real_challenge_response(forty[:32])
    long = "x" * 80
    assert real_challenge_response(long) == real_challenge_response(long[:56])
    assert real_challenge_response("ab\x00cd") == real_challenge_response("ab")


@given(st.text(st.characters(max_codepoint=255), max_size=80))
def test_shape(challenge: str) -> None:
    response, sd = real_challenge_response(challenge)
    assert len(response) == 40 and response.endswith("01d0a8e3")
    assert all(c in "0123456789abcdef" for c in response)
    assert sd == response[0] + response[4] + response[8] + response[12] + response[16] + (
        response[20] + response[24] + response[28]
    )


def test_non_latin1_is_refused() -> None:
    with pytest.raises(RealProtocolError):
        real_challenge_response("\u20ac")
