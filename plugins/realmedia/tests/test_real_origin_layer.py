"""Playbooks for the reference Real origin's layer: events in, commands out, no sockets.

The playout is driven by hand (``pump(now)`` on the object ``StartPlayout`` carries) with a
settable clock, and the sinks record what they were sent.
"""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.formats import OriginOptions
from mediacache.rtsp import Response, RtspReader
from mediacache.sansio.commands import (
    CloseConnection,
    EmitRecord,
    Log,
    SetTimer,
    StartPlayout,
    StopPlayout,
    UnwatchDatagrams,
    WatchDatagrams,
)
from mediacache.testing.peers import make_clip
from mediacache.testing.playbook import Playbook
from mediacache_realmedia.auth import REALM, Credentials, digest_response, parse_authorization
from mediacache_realmedia.challenge import real_challenge_response
from mediacache_realmedia.origin import (
    ALLOWED,
    Phase,
    RdtPlayout,
    RealClip,
    rdt_data_packet,
    reference_origin,
    request_path,
)
from mediacache_realmedia.plugin import PLUGIN, REALMEDIA, RealConfig, make_layer
from mediacache_realmedia.sdp import multirate_rulebook, parse_asm_rulebook
from mediacache_realmedia.wire.rdt import RdtData, RdtStreamEnd, build_data_packet, parse_rdt
from mediacache_realmedia.wire.rmf import parse_rm

URL = "rtsp://127.0.0.1:554"


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed (it makes the clips)")
    d = tmp_path_factory.mktemp("root")
    make_clip(d / "a.rm", 3, kind="rv20_ac3")
    (d / "live").mkdir()
    make_clip(d / "live" / "l.rm", 3, kind="rv10_real144")
    (d / "bad.rm").write_bytes(b".RMF garbage")
    (d / "x.mp4").write_bytes(b"\0" * 10)
    return d


def req(method: str, uri: str, cseq: int | None, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {uri} RTSP/1.0"]
    if cseq is not None:
        lines.append(f"CSeq: {cseq}")
    lines += headers
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def replies(pb: Playbook, out: list) -> list[Response]:
    reader = RtspReader()
    for data in pb.sent_to_client(out):
        reader.receive_data(data)
    return [e for e in reader.events() if isinstance(e, Response)]


def one(pb: Playbook, out: list) -> Response:
    (r,) = replies(pb, out)
    return r


class Origin:
    """A playbook of one origin connection with a settable monotonic clock."""

    def __init__(self, root: Path, **options: object) -> None:
        factory = reference_origin(OriginOptions(root=root, listen="127.0.0.1:0", **options))
        self.factory = factory
        self.pb = Playbook(factory, settings=RealConfig(), format_name="realmedia")
        self.now = 100.0
        self.pb.ctx.monotonic = lambda: self.now
        self.pb.start()
        self.cseq = 0
        self.challenge = ""

    def send(self, method: str, uri: str, *headers: str) -> tuple[Response, list]:
        self.cseq += 1
        out = self.pb.client_sends(req(method, uri, self.cseq, *headers))
        return one(self.pb, out), out

    def options(self) -> Response:
        r, _ = self.send("OPTIONS", URL)
        self.challenge = r.headers["RealChallenge1"]
        return r

    def challenge2(self) -> str:
        response, sd = real_challenge_response(self.challenge)
        return f"RealChallenge2: {response}, sd={sd}"

    def setup_all(self, path: str = "a.rm", transport: str = "x-pn-tng/tcp") -> Response:
        self.options()
        r, _ = self.send("SETUP", f"{URL}/{path}/streamid=0", f"Transport: {transport}",
                         self.challenge2())  # fmt: skip
        assert r.status == 200, r
        session = r.headers["Session"].split(";")[0]
        r, _ = self.send("SETUP", f"{URL}/{path}/streamid=1", f"Transport: {transport}",
                         f"Session: {session}")  # fmt: skip
        assert r.status == 200, r
        return r

    @property
    def session(self) -> str:
        return self.pb.layer.session_id  # type: ignore[attr-defined,no-any-return]


# -- the handshake ------------------------------------------------------------------------------


def test_options_carry_the_same_short_challenge_twice(root: Path) -> None:
    o = Origin(root)
    first = o.options()
    second = o.options()
    assert first.status == second.status == 200
    assert first.headers["RealChallenge1"] == second.headers["RealChallenge1"]
    assert len(first.headers["RealChallenge1"]) <= 56
    assert "Real" in first.headers["Server"]
    assert "SET_PARAMETER" in first.headers["Public"]


def test_describe_is_real_sdp_with_etag_and_content_base(root: Path) -> None:
    o = Origin(root)
    r, _ = o.send("DESCRIBE", f"{URL}/a.rm", "Require: com.real.retain-entity-for-setup")
    assert r.status == 200
    assert r.headers["Content-Base"] == f"{URL}/a.rm/"
    assert r.headers["ETag"] and r.headers["Content-Type"] == "application/sdp"
    sdp = r.body.decode()
    assert "a=IsRealDataType:integer;1" in sdp and f"a=control:{URL}/a.rm/" in sdp
    assert sdp.index("a=OpaqueData") < sdp.index("a=ASMRuleBook")
    assert "a=range:npt=0-3.030" in sdp


def test_describe_of_a_live_file_is_open_ended(root: Path) -> None:
    o = Origin(root)
    r, _ = o.send("DESCRIBE", f"{URL}/live/l.rm")
    assert "a=range:npt=now-" in r.body.decode() and "a=LiveStream:integer;1" in r.body.decode()


def test_vlc_style_uri_without_scheme(root: Path) -> None:
    o = Origin(root)
    r, _ = o.send("DESCRIBE", "127.0.0.1:554/a.rm")
    assert r.status == 200 and r.headers["Content-Base"] == "rtsp://127.0.0.1:554/a.rm/"
    assert request_path("127.0.0.1:554/a%20b.rm?x=1") == "/a b.rm"


@pytest.mark.parametrize(
    ("path", "status"),
    [("nope.rm", 404), ("x.mp4", 404), ("bad.rm", 415), ("../etc/passwd.rm", 404)],
)
def test_describe_errors(root: Path, path: str, status: int) -> None:
    o = Origin(root)
    r, _ = o.send("DESCRIBE", f"{URL}/{path}")
    assert r.status == status


def test_setup_tcp_and_udp_transports(root: Path) -> None:
    o = Origin(root)
    o.options()
    r, out = o.send("SETUP", f"{URL}/a.rm/streamid=0",
                    "Transport: x-real-rdt/tcp;mode=play,x-pn-tng/tcp;mode=play",
                    o.challenge2())  # fmt: skip
    assert r.status == 200 and r.headers["Transport"] == "x-real-rdt/tcp;interleaved=0"
    assert r.headers["Session"].endswith(";timeout=60")
    r, out = o.send("SETUP", f"{URL}/a.rm/streamid=1", "Transport: x-pn-tng/udp;client_port=5000",
                    f"Session: {o.session}")  # fmt: skip
    assert r.headers["Transport"] == "x-pn-tng/udp;client_port=5000;server_port=6970"
    assert WatchDatagrams(("127.0.0.1", 5000)) in out
    kinds = [(s.kind, s.target if s.kind == "udp" else s.target[1]) for s in o.pb.dataplane.sinks]
    assert kinds == [("interleaved", 0), ("udp", ("127.0.0.1", 5000))]


def test_setup_keeps_the_channel_a_client_offers(root: Path) -> None:
    o = Origin(root)
    o.options()
    r, _ = o.send("SETUP", f"{URL}/a.rm/streamid=1", "Transport: x-pn-tng/TCP;interleaved=2-3",
                  o.challenge2())  # fmt: skip
    assert r.headers["Transport"] == "x-pn-tng/TCP;interleaved=2"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        (["Transport: RTP/AVP;unicast;client_port=5000-5001"], 461),
        (["Transport: x-pn-tng/udp"], 461),  # UDP without a port
        (["Transport: x-pn-tng/tcp"], 400),  # no RealChallenge2
        (["Transport: x-pn-tng/tcp", "RealChallenge2: 0123456789abcdef, sd=01234567"], 400),
        (["Transport: x-pn-tng/tcp;interleaved=x"], 400),
    ],
)
def test_setup_refusals(root: Path, headers: list[str], status: int) -> None:
    o = Origin(root)
    o.options()
    r, _ = o.send("SETUP", f"{URL}/a.rm/streamid=0", *headers)
    assert r.status == status
    assert o.pb.layer.phase is Phase.INIT  # type: ignore[attr-defined]


def test_setup_of_unknown_stream_and_aggregate(root: Path) -> None:
    o = Origin(root)
    o.options()
    r, _ = o.send("SETUP", f"{URL}/a.rm/streamid=7", "Transport: x-pn-tng/tcp", o.challenge2())
    assert r.status == 404
    r, _ = o.send("SETUP", f"{URL}/a.rm", "Transport: x-pn-tng/tcp", o.challenge2())
    assert r.status == 459


def test_udp_is_refused_without_udp_ports(root: Path) -> None:
    o = Origin(root)

    class NoUdp:
        """What the server's data plane does for a format started without UDP ports."""

        @property
        def server_ports(self) -> tuple[int, int]:
            raise RuntimeError("this format has no UDP ports")

    o.pb.ctx.dataplane = NoUdp()  # type: ignore[assignment]
    o.options()
    r, _ = o.send("SETUP", f"{URL}/a.rm/streamid=0", "Transport: x-pn-tng/udp;client_port=5000",
                  o.challenge2())  # fmt: skip
    assert r.status == 461


# -- state table ---------------------------------------------------------------------------------


def test_transition_table_is_total_and_small() -> None:
    assert set(ALLOWED) == set(Phase)
    assert "SETUP" not in ALLOWED[Phase.PLAYING] and "PLAY" not in ALLOWED[Phase.INIT]
    assert ALLOWED[Phase.CLOSED] == frozenset()


def test_method_errors(root: Path) -> None:
    o = Origin(root)
    r, _ = o.send("PLAY", f"{URL}/a.rm")
    assert r.status == 455 and "SETUP" in r.headers["Allow"]
    r, _ = o.send("RECORD", f"{URL}/a.rm")
    assert r.status == 501
    r, _ = o.send("FROBNICATE", f"{URL}/a.rm")
    assert r.status == 501 and "DESCRIBE" in r.headers["Public"]
    r, _ = o.send("play", f"{URL}/a.rm")  # methods are case-sensitive
    assert r.status == 501
    r, _ = o.send("GET_PARAMETER", f"{URL}/a.rm", "Session: 12345")
    assert r.status == 454
    r, _ = o.send("OPTIONS", URL, "Require: funky-feature")
    assert r.status == 551 and r.headers["Unsupported"] == "funky-feature"
    o.setup_all()
    r, _ = o.send("PLAY", f"{URL}/a.rm", "Session: wrong")
    assert r.status == 454
    r, _ = o.send(
        "SET_PARAMETER", f"{URL}/a.rm", f"Session: {o.session}", "Subscribe: stream=9;rule=0"
    )
    assert r.status == 451
    r, _ = o.send("SET_PARAMETER", f"{URL}/a.rm", f"Session: {o.session}", "Subscribe: rubbish")
    assert r.status == 400
    r, _ = o.send(
        "SET_PARAMETER", f"{URL}/a.rm", f"Session: {o.session}", "Subscribe: stream=0;rule=5"
    )
    assert r.status == 451  # a single-rate stream has rules 0 and 1
    r, _ = o.send("PLAY", f"{URL}/a.rm", f"Session: {o.session}", "Range: npt=99-")
    assert r.status == 457
    r, _ = o.send("PLAY", f"{URL}/a.rm", f"Session: {o.session}", "Range: smpte=0:00:01-")
    assert r.status == 457
    r, _ = o.send("SETUP", f"{URL}/live/l.rm/streamid=0", "Transport: x-pn-tng/tcp",
                  f"Session: {o.session}")  # fmt: skip
    assert r.status == 455  # one presentation per session


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x00\x01\x02garbage\r\n\r\n",
        b"DESCRIBE rtsp://x/a.rm HTTP/1.1\r\nCSeq: 1\r\n\r\n",
        b"DESCRIBE rtsp://x/a.rm RTSP/1.0\r\nCSeq: 1\r\nContent-Length: 9999999\r\n\r\n",
        b"DESCRIBE " + b"a" * 10000 + b" RTSP/1.0\r\n\r\n",
        b"DESCRIBE rtsp://x/a.rm RTSP/1.0\r\n\r\n",  # no CSeq
    ],
)
def test_garbage_gets_an_error_and_a_lingering_close(root: Path, garbage: bytes) -> None:
    o = Origin(root)
    out = o.pb.client_sends(garbage)
    r = one(o.pb, out)
    assert r.status in (400, 413, 414, 505)
    (close,) = o.pb.of_type(out, CloseConnection)
    assert close.drain and not close.abort
    assert o.pb.client_sends(b"OPTIONS * RTSP/1.0\r\nCSeq: 2\r\n\r\n") == []


# -- data ----------------------------------------------------------------------------------------


def frames(payloads: list[bytes]) -> list:
    return [p for payload in payloads for p in parse_rdt(payload)]


def test_no_data_before_subscribe_and_play_then_every_packet_paced(root: Path) -> None:
    o = Origin(root)
    o.setup_all()
    s = f"Session: {o.session}"
    r, out = o.send("PLAY", f"{URL}/a.rm", s, "Range: npt=0-")
    assert r.status == 200 and r.headers["Range"] == "npt=0.000-3.030"
    assert "streamid=0;seq=0;rtptime=0" in r.headers["RTP-Info"]
    assert not o.pb.of_type(out, StartPlayout)  # not subscribed yet
    sub = "Subscribe: stream=0;rule=0,stream=0;rule=1,stream=1;rule=0,stream=1;rule=1"
    r, out = o.send("SET_PARAMETER", f"{URL}/a.rm", s, sub)
    (start,) = o.pb.of_type(out, StartPlayout)
    playout = start.player
    assert isinstance(playout, RdtPlayout)
    video, audio = o.pb.dataplane.sinks
    assert playout.pump(o.now) == pytest.approx(o.now + 0.034 - 0.01, abs=0.002)
    assert len(video.payloads) == 1 and len(audio.payloads) == 1
    wake = o.now
    while wake is not None:
        wake = playout.pump(wake + 0.001)
    rm = parse_rm((root / "a.rm").read_bytes())
    got_video = frames(video.payloads)
    assert [p.payload for p in got_video if isinstance(p, RdtData)] == [
        p.payload for p in rm.packets if p.stream == 0
    ]
    data = [p for p in got_video if isinstance(p, RdtData)]
    assert [p.seq for p in data] == list(range(len(data)))
    assert {p.set_id for p in data} == {0} and all(p.total_reliable == 0 for p in data)
    assert [p.keyframe for p in data] == [p.keyframe for p in rm.packets if p.stream == 0]
    assert isinstance(got_video[-1], RdtStreamEnd) and got_video[-1].seq == len(data)
    assert {p.set_id for p in frames(audio.payloads) if isinstance(p, RdtData)} == {1}
    assert playout.ended


def test_subscribe_selects_rules(root: Path) -> None:
    o = Origin(root)
    o.setup_all()
    s = f"Session: {o.session}"
    o.send("SET_PARAMETER", f"{URL}/a.rm", s, "Subscribe: stream=0;rule=0")  # key frames only
    _, out = o.send("PLAY", f"{URL}/a.rm", s)
    (start,) = o.pb.of_type(out, StartPlayout)
    wake = o.now
    while wake is not None:
        wake = start.player.pump(wake + 0.001)
    video, audio = o.pb.dataplane.sinks
    data = [p for p in frames(video.payloads) if isinstance(p, RdtData)]
    rm = parse_rm((root / "a.rm").read_bytes())
    assert len(data) == sum(1 for p in rm.packets if p.stream == 0 and p.keyframe) > 0
    assert all(p.asm_rule == 0 for p in data)
    assert not [p for p in frames(audio.payloads) if isinstance(p, RdtData)]


def test_pause_resume_seek_and_teardown(root: Path) -> None:
    o = Origin(root)
    o.setup_all()
    s = f"Session: {o.session}"
    o.send("SET_PARAMETER", f"{URL}/a.rm", s, "Subscribe: stream=0;rule=0,stream=0;rule=1")
    _, out = o.send("PLAY", f"{URL}/a.rm", s)
    (start,) = o.pb.of_type(out, StartPlayout)
    start.player.pump(o.now + 1.0)
    r, out = o.send("PAUSE", f"{URL}/a.rm", s)
    assert r.status == 200 and o.pb.of_type(out, StopPlayout)
    o.now += 10
    r, out = o.send("PLAY", f"{URL}/a.rm", s)
    assert r.headers["Range"].startswith("npt=1.0")  # resumes where it stopped
    (start,) = o.pb.of_type(out, StartPlayout)
    r, out = o.send("PLAY", f"{URL}/a.rm", s, "Range: npt=2.5-")
    (stop,) = o.pb.of_type(out, StopPlayout)
    assert stop.player is start.player
    clip = RealClip.from_bytes("a.rm", (root / "a.rm").read_bytes())
    start_ms = float(r.headers["Range"][4:].split("-")[0]) * 1000
    assert start_ms <= 2500 and clip.index_at(start_ms) in clip.keys
    r, out = o.send("TEARDOWN", f"{URL}/a.rm", s)
    assert r.status == 200 and r.headers["Session"].startswith(o.session)
    (record,) = [c.record for c in o.pb.of_type(out, EmitRecord)]
    assert record.variant == "stream=0;rule=0,stream=0;rule=1" and record.reason == "teardown"
    assert record.transport == "RDT/TCP" and record.bytes_to_client > 0
    assert o.pb.layer.phase is Phase.INIT  # type: ignore[attr-defined]
    r, _ = o.send("PLAY", f"{URL}/a.rm", s)
    assert r.status == 454


def test_live_viewers_share_one_clock_and_join_at_a_key_frame(root: Path) -> None:
    factory = reference_origin(OriginOptions(root=root, listen="127.0.0.1:0"))
    now = [50.0]
    joined = []
    for _ in range(2):
        pb = Playbook(factory, settings=RealConfig(), format_name="realmedia")
        pb.ctx.monotonic = lambda: now[0]
        pb.start()
        r = one(pb, pb.client_sends(req("OPTIONS", URL, 1)))
        response, sd = real_challenge_response(r.headers["RealChallenge1"])
        url = f"{URL}/live/l.rm"
        r = one(pb, pb.client_sends(req("SETUP", f"{url}/streamid=0", 2, "Transport: x-pn-tng/tcp",
                                        f"RealChallenge2: {response}, sd={sd}")))  # fmt: skip
        s = f"Session: {r.headers['Session'].split(';')[0]}"
        pb.client_sends(
            req("SET_PARAMETER", url, 3, s, "Subscribe: stream=0;rule=0,stream=0;rule=1")
        )
        out = pb.client_sends(req("PLAY", url, 4, s, "Range: npt=0-"))
        assert one(pb, out).headers["Range"] == "npt=now-"
        (start,) = pb.of_type(out, StartPlayout)
        start.player.pump(now[0])
        joined.append(frames(pb.dataplane.sinks[0].payloads))
        now[0] += 7.5  # two and a half passes of the 3 s loop later
    first, second = joined
    assert first[0].timestamp == 0
    clip = RealClip.from_bytes("l.rm", (root / "live" / "l.rm").read_bytes(), live=True)
    ts = second[0].timestamp
    assert 2 * clip.period_ms <= ts <= 2 * clip.period_ms + 1500  # "now", not the beginning
    assert second[0].keyframe and len(second) > 1  # a key frame, then the burst up to now


def test_max_sessions_453_and_the_slot_comes_back(root: Path) -> None:
    factory = reference_origin(OriginOptions(root=root, listen="x:0", max_sessions=1))
    pbs = []
    for _ in range(2):
        pb = Playbook(factory, settings=RealConfig(), format_name="realmedia")
        pb.start()
        r = one(pb, pb.client_sends(req("OPTIONS", URL, 1)))
        response, sd = real_challenge_response(r.headers["RealChallenge1"])
        out = pb.client_sends(req("SETUP", f"{URL}/a.rm/streamid=0", 2, "Transport: x-pn-tng/tcp",
                                  f"RealChallenge2: {response}, sd={sd}"))  # fmt: skip
        pbs.append((pb, one(pb, out)))
    assert [r.status for _, r in pbs] == [200, 453]
    pbs[0][0].closed(pbs[0][0].client)
    pb = pbs[1][0]
    r = one(pb, pb.client_sends(req("OPTIONS", URL, 3)))
    response, sd = real_challenge_response(r.headers["RealChallenge1"])
    out = pb.client_sends(req("SETUP", f"{URL}/a.rm/streamid=0", 4, "Transport: x-pn-tng/tcp",
                              f"RealChallenge2: {response}, sd={sd}"))  # fmt: skip
    assert one(pb, out).status == 200


def test_abort_after_a_bug_frees_the_slot_and_records_a_500(root: Path) -> None:
    """What the driver calls when the layer raised (SessionDriver._layer_failed)."""
    o = Origin(root, max_sessions=1)
    o.setup_all()
    out = o.pb.layer.abort("internal error")  # type: ignore[attr-defined]
    assert CloseConnection(o.pb.client, abort=True) in out
    records = [c.record for c in out if isinstance(c, EmitRecord)]
    assert [(r.status, r.reason) for r in records] == [(500, "internal error")]
    pb = Playbook(o.factory, settings=RealConfig(), format_name="realmedia")  # same origin
    pb.start()
    r = one(pb, pb.client_sends(req("OPTIONS", URL, 1)))
    response, sd = real_challenge_response(r.headers["RealChallenge1"])
    out = pb.client_sends(req("SETUP", f"{URL}/a.rm/streamid=0", 2, "Transport: x-pn-tng/tcp",
                              f"RealChallenge2: {response}, sd={sd}"))  # fmt: skip
    assert one(pb, out).status == 200  # the slot came back


def test_idle_client_is_dropped(root: Path) -> None:
    o = Origin(root)
    o.setup_all(transport="x-pn-tng/udp;client_port=5000")
    o.now += 31
    out = o.pb.timer("idle")
    assert SetTimer("idle", 30.0) in out
    o.pb.datagram(("127.0.0.1", 5000), b"\x00\xff\x03")  # an RTT request counts as a sign of life
    o.now += 31
    assert not o.pb.of_type(o.pb.timer("idle"), CloseConnection)
    o.now += 61
    out = o.pb.timer("idle")
    assert o.pb.of_type(out, CloseConnection) and UnwatchDatagrams(("127.0.0.1", 5000)) in out
    (record,) = [c.record for c in o.pb.of_type(out, EmitRecord)]
    assert record.status == 408


# -- authentication --------------------------------------------------------------------------------


def test_auth_401_offers_digest_and_basic_and_accepts_either(root: Path) -> None:
    o = Origin(root, auth="user:secret")
    assert o.options().status == 200  # OPTIONS is free: it carries the Real challenge
    r, _ = o.send("DESCRIBE", f"{URL}/a.rm")
    assert r.status == 401
    schemes = r.headers.get_all("WWW-Authenticate")
    assert [s.split()[0] for s in schemes] == ["Digest", "Basic"]
    params = parse_authorization(schemes[0])
    assert params is not None and isinstance(params[1], dict)
    nonce = params[1]["nonce"]
    good = digest_response("user", "secret", REALM, nonce, "DESCRIBE", f"{URL}/a.rm")
    r, _ = o.send("DESCRIBE", f"{URL}/a.rm", f"Authorization: {good}")
    assert r.status == 200
    bad = digest_response("user", "wrong", REALM, nonce, "DESCRIBE", f"{URL}/a.rm")
    r, out = o.send("DESCRIBE", f"{URL}/a.rm", f"Authorization: {bad}")
    assert r.status == 401
    assert any("bad credentials" in log.message for log in o.pb.of_type(out, Log))
    basic = base64.b64encode(b"user:secret").decode()
    r, _ = o.send("DESCRIBE", f"{URL}/a.rm", f"Authorization: Basic {basic}")
    assert r.status == 200
    wrong = base64.b64encode(b"user:nope").decode()
    r, _ = o.send("DESCRIBE", f"{URL}/a.rm", f"Authorization: Basic {wrong}")
    assert r.status == 401


def test_digest_checks() -> None:
    c = Credentials.from_option("u:p:with:colons")
    assert c.password == "p:with:colons"
    nonce = c.new_nonce()
    tampered = nonce[:-1] + ("1" if nonce[-1] == "0" else "0")
    assert c.nonce_ok(nonce) and not c.nonce_ok(tampered) and not c.nonce_ok("x")
    ok = digest_response("u", "p:with:colons", REALM, nonce, "PLAY", "rtsp://h/a.rm")
    assert c.check("PLAY", ok)
    assert not c.check("SETUP", ok)  # the method is part of the digest
    forged = digest_response("u", "p:with:colons", REALM, "0" * 32, "PLAY", "rtsp://h/a.rm")
    assert not c.check("PLAY", forged)
    assert not c.check("PLAY", "Digest garbage") and not c.check("PLAY", "Bearer x")
    assert not c.check("PLAY", "Basic !!!") and not c.check("PLAY", None)
    with pytest.raises(ValueError):
        Credentials.from_option("nouser")


def test_digest_with_qop_auth() -> None:
    import hashlib

    c = Credentials("u", "p")
    nonce = c.new_nonce()

    def h(s: str) -> str:
        return hashlib.md5(s.encode()).hexdigest()

    ha1, ha2 = h(f"u:{REALM}:p"), h("DESCRIBE:rtsp://h/a.rm")
    response = h(f"{ha1}:{nonce}:00000001:abc:auth:{ha2}")
    value = (
        f'Digest username="u", realm="{REALM}", nonce="{nonce}", uri="rtsp://h/a.rm", '
        f'response="{response}", qop=auth, nc=00000001, cnonce="abc", algorithm="MD5"'
    )
    assert c.check("DESCRIBE", value)


# -- pieces ---------------------------------------------------------------------------------------


@given(
    set_id=st.integers(0, 30),
    seq=st.integers(0, 0xFEFF),
    stream=st.integers(0, 30),
    keyframe=st.booleans(),
    ts=st.integers(0, 0xFFFFFFFF),
    payload=st.binary(max_size=64),
)
def test_fast_data_packet_equals_the_declared_one(
    set_id: int, seq: int, stream: int, keyframe: bool, ts: int, payload: bytes
) -> None:
    rule = stream << 1 | (not keyframe)
    assert rdt_data_packet(set_id, seq, rule, ts, payload) == build_data_packet(
        set_id, seq, ts, payload, stream_id=stream, keyframe=keyframe
    )


def test_expanded_fields_fall_back_to_the_declaration() -> None:
    (p,) = parse_rdt(rdt_data_packet(40, 1, 70, 5, b"x"))
    assert isinstance(p, RdtData) and (p.set_id, p.asm_rule, p.payload) == (40, 70, b"x")


def test_multirate_rulebook_conditions() -> None:
    rules = parse_asm_rulebook(multirate_rulebook([300_000, 100_000]))
    assert len(rules) == 4
    assert rules[0].condition == "($Bandwidth >= 300000)"
    assert rules[2].condition == "($Bandwidth < 300000)"
    assert [r.average_bandwidth for r in rules] == [300_000, 0, 100_000, 0]
    mid = parse_asm_rulebook(multirate_rulebook([1, 2, 3]))[2]
    assert mid.condition == "($Bandwidth >= 2) && ($Bandwidth < 3)"


def test_plugin_registers_the_format_with_the_real_proxy_layer() -> None:
    """The proxy side is the core's RTSP layer with Real's transports: the origin is asked for
    RDT on the player's own interleaved channel (ffmpeg routes RDT by set id = channel)."""
    assert REALMEDIA.name == "realmedia" and REALMEDIA.has_reference_origin
    assert PLUGIN._reference_origin is reference_origin and PLUGIN.spec is REALMEDIA
    assert RealConfig().listen == "0.0.0.0:9231" and RealConfig().udp_ports == "6970-32000"
    assert RealConfig().origin_port == 554
    pb = Playbook(make_layer, settings=RealConfig(), format_name="realmedia")
    pb.start()
    out = pb.client_sends(req("SETUP", "rtsp://192.0.2.9/a.rm/streamid=0", 3,
                              "Transport: x-pn-tng/tcp;interleaved=4"))  # fmt: skip
    (origin,) = pb.opened_connections(out)
    out = pb.opened(origin)
    greeting, sent = pb.sent_to(origin, out)
    # first our own OPTIONS: its RealChallenge1 is what our first SETUP must answer
    assert greeting.startswith(b"OPTIONS ") and b"ClientChallenge: " in greeting
    assert b"Transport: x-pn-tng/tcp;interleaved=4\r\n" in sent
    out = pb.client_sends(req("SETUP", "rtsp://192.0.2.9/a.rm/streamid=1", 4,
                              "Transport: RTP/AVP;unicast;client_port=5000-5001"))  # fmt: skip
    assert pb.sent_to_client(out) == []  # queued behind the first SETUP, not refused yet


def test_interleaved_data_from_a_client_is_ignored(root: Path) -> None:
    o = Origin(root)
    o.setup_all()
    assert o.pb.client_sends(b"$\x00\x00\x03\x00\xff\x03") == []  # an RDT RTT request
