"""Authentication pass-through: the origin's challenge goes to the player, its answer back.

Neither ffmpeg nor VLC can answer an MMS challenge, so the scripted player does (Basic, as the
reference origin asks); ffmpeg shows that the challenge reaches a real player unchanged. Such a
stream is relayed and never cached: each player pulls it from the origin again (bytes counted).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from wmt_origin_env import ffmpeg_rows, have
from wmt_proxy_env import (
    ByteCountingRelay,
    cached_keys,
    expected,
    fills,
    origin_thread,
    player,
    proxy_url,
    routed,
)

from mediacache.testing import peers
from mediacache.testing.origin import OriginThread
from mediacache.testing.proxy import ProxyThread
from mediacache_wmt.origin import basic_token
from mediacache_wmt.testing import MmsClient
from mediacache_wmt.wire import mms

pytestmark = pytest.mark.skipif(not have("ffmpeg"), reason="needs ffmpeg to make the clips")

CLIP_BYTES = 150_000


@pytest.fixture
def origin() -> Iterator[OriginThread]:
    with origin_thread(auth="alice:s3cret") as o:
        yield o
        assert o.wait_idle()


@pytest.fixture
def relay(origin: OriginThread) -> Iterator[ByteCountingRelay]:
    with ByteCountingRelay(origin.port) as r:
        yield r


def open_with_challenge(c: MmsClient, name: str) -> mms.SecurityChallenge:
    c.connect()
    c.request(mms.FunnelInfo(), mms.ReportFunnelInfo)
    assert isinstance(c.funnel(), mms.ReportConnectedFunnel)
    challenge = c.open(name)
    assert isinstance(challenge, mms.SecurityChallenge), challenge
    return challenge


def test_the_challenge_is_relayed_and_the_stream_never_cached(origin, relay) -> None:
    with ProxyThread(routed(relay.port)) as p:
        for n in (1, 2):
            before = relay.bytes_down
            with player(p) as c:
                challenge = open_with_challenge(c, "w/clip.wmv")
                assert 'realm="mediacache"'.encode("utf-16-le") in challenge.token
                c.send(mms.SecurityResponse(basic_token("alice", "s3cret"),
                                            cookie=challenge.cookie))
                opened = c.command()
                assert isinstance(opened, mms.ReportOpenFile) and opened.hr == 0, opened
                c.read_header()
                got = c.play()
                assert [x.payload for x in got.packets] == expected("clip.wmv")
            assert relay.bytes_down - before > CLIP_BYTES  # from the origin, every time
            assert [r.result for r in p.wait_records(n)] == ["PASS"] * n
        assert cached_keys(p) == [] and fills(p) == 0
        assert {r.status for r in p.records()} == {200}
    assert [r.status for r in origin.wait_records(2)] == [200, 200]


def test_credentials_sent_unasked_are_relayed_and_not_cached(origin) -> None:
    with ProxyThread(routed(origin.port)) as p, player(p) as c:
        c.connect()
        c.request(mms.FunnelInfo(), mms.ReportFunnelInfo)
        c.funnel()
        opened = c.open("w/clip.wmv", token=basic_token("alice", "s3cret"))
        assert isinstance(opened, mms.ReportOpenFile) and opened.hr == 0
        c.read_header()
        assert len(c.play().packets) == len(expected("clip.wmv"))
        c.close()
        assert p.wait_records(1)[0].result == "PASS"
        assert cached_keys(p) == []


def test_a_wrong_password_is_refused(origin) -> None:
    with ProxyThread(routed(origin.port)) as p, player(p) as c:
        challenge = open_with_challenge(c, "w/clip.wmv")
        answer: mms.MmsCommand | None = challenge
        for _ in range(3):  # the origin allows three tries
            assert isinstance(answer, mms.SecurityChallenge), answer
            c.send(mms.SecurityResponse(basic_token("alice", "wrong"), cookie=answer.cookie))
            answer = c.command()
        assert isinstance(answer, mms.ReportOpenFile), answer
        assert (answer.hr, answer.open_file_id) == (mms.HResult.ACCESS_DENIED, 0)
        assert c.closed()
        [record] = p.wait_records(1)
        assert (record.status, record.result) == (401, "PASS")
    assert origin.wait_records(1)[0].status == 401


@pytest.mark.peers
def test_ffmpeg_gets_the_origins_challenge(origin) -> None:
    with ProxyThread(routed(origin.port)) as p, peers.ProcessGroup() as group:
        code, rows, err = ffmpeg_rows(proxy_url(p, "clip.wmv"), group, timeout=20)
        assert code != 0 and not rows
        assert "0x1a" in err  # "unexpected packet type 0x1a, expected 0x6", as from the origin
        assert p.wait_records(1)[0].status == 401
