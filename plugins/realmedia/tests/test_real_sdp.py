"""Real SDP: the describe_rm output checked line by line, ASM rule books, Subscribe values."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mediacache.errors import LocalProtocolError
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.sdp import (
    AsmRule,
    describe_rm,
    format_subscribe,
    multirate_rulebook,
    parse_asm_rulebook,
    parse_subscribe,
)
from mediacache_realmedia.wire.rmf import (
    ContentDescription,
    LogicalStream,
    MediaProperties,
    RmFile,
    build_logical_stream,
    parse_rm,
)

URL = "rtsp://origin.example:554/clips/a.rm"


def check_real_sdp(sdp: str) -> dict:
    """A small checker for what PEERS.md item 2 and the clients' parsers need.

    Returns the session attributes and, per m= section, its attributes in order.
    """
    assert sdp.endswith("\r\n") and "\n" not in sdp.replace("\r\n", "")
    lines = sdp.split("\r\n")[:-1]
    assert all(lines) and all(re.fullmatch(r"[a-z]=.*", line) for line in lines)
    assert [line[0] for line in lines[:5]] == ["v", "o", "s", "c", "t"] and lines[0] == "v=0"
    session: list[str] = []
    media: list[dict] = []
    for line in lines[5:]:
        if line.startswith("m="):
            media.append({"m": line[2:], "attrs": []})
        elif media:
            media[-1]["attrs"].append(line)
        else:
            session.append(line)
    assert "a=IsRealDataType:integer;1" in session
    count = [a for a in session if a.startswith("a=StreamCount:integer;")]
    assert count == [f"a=StreamCount:integer;{len(media)}"]
    control = [a for a in session if a.startswith("a=control:")]
    assert len(control) == 1 and control[0].endswith("/")
    pts, ids = set(), set()
    for section in media:
        kind, port, proto, pt = section["m"].split()
        assert kind in ("audio", "video", "application") and (port, proto) == ("0", "RTP/AVP")
        assert int(pt) >= 101 and pt not in pts
        pts.add(pt)
        attrs = section["attrs"]
        names = [a.split(":", 1)[0] for a in attrs if a.startswith("a=")]
        for required in ("a=control", "a=rtpmap", "a=mimetype", "a=AvgBitRate", "a=MaxBitRate",
                         "a=StreamName", "a=Preroll", "a=OpaqueData", "a=ASMRuleBook", "a=range"):
            assert names.count(required) == 1, required  # fmt: skip
        assert names.index("a=OpaqueData") < names.index("a=ASMRuleBook")  # ffmpeg needs this
        sid = next(a for a in attrs if a.startswith("a=control:"))
        assert re.fullmatch(r"a=control:streamid=\d+", sid) and sid not in ids
        ids.add(sid)
        rtpmap = next(a for a in attrs if a.startswith("a=rtpmap:"))
        assert re.fullmatch(rf"a=rtpmap:{pt} x-pn-real{kind}/1000", rtpmap)
        for a in attrs:
            if ":string;" in a or ":buffer;" in a:
                value = a.split(";", 1)[1]
                assert value[0] == value[-1] == '"' and '"' not in value[1:-1]
        section["get"] = {a.split(":", 1)[0][2:]: a.split(":", 1)[1] for a in attrs}
    return {"session": session, "media": media}


@pytest.fixture(scope="module")
def clip(rm_clips: dict[str, Path]) -> RmFile:
    return parse_rm(rm_clips["rv20_ac3"].read_bytes())


def test_describe_on_demand(clip: RmFile) -> None:
    sdp = describe_rm(clip, url=URL, live=False)
    checked = check_real_sdp(sdp)
    assert f"a=control:{URL}/" in checked["session"]
    assert "a=range:npt=0-3.030" in checked["session"]
    for section, mp in zip(checked["media"], clip.streams, strict=True):
        got = section["get"]
        assert got["control"] == f"streamid={mp.stream_number}"
        assert base64.b64decode(got["OpaqueData"].split(";", 1)[1].strip('"')) == (
            mp.type_specific_data
        )
        assert got["AvgBitRate"] == f"integer;{mp.avg_bit_rate}"
        assert got["MaxBitRate"] == f"integer;{mp.max_bit_rate}"
        assert got["Preroll"] == f"integer;{mp.preroll_ms}"
        assert got["mimetype"] == f'string;"{mp.mime_type}"'
        assert got["StreamName"] == f'string;"{mp.stream_name}"'
        assert got["range"] == f"npt=0-{mp.duration_ms / 1000:.3f}"
        assert got["length"] == f"npt={mp.duration_ms / 1000:.3f}"
        rules = parse_asm_rulebook(got["ASMRuleBook"].split(";", 1)[1])
        assert len(rules) == 2  # one pair: ffmpeg makes one AVStream per even rule
        assert rules[0].average_bandwidth == mp.avg_bit_rate
        assert rules[0].get("PNMKeyFrameRule") == "T"
        assert rules[1].get("pnmnonkeyframerule") == "T"


def test_describe_live_and_content(clip: RmFile) -> None:
    fileinfo = MediaProperties(9, 0, 0, 0, 0, 0, 0, 0, "", "logical-fileinfo",
                               build_logical_stream(LogicalStream()))  # fmt: skip
    rm = dataclasses.replace(
        clip,
        content=ContentDescription('He said "hi"\r\nX', "Author", "", ""),
        streams=(*clip.streams, fileinfo),
    )
    sdp = describe_rm(rm, url=URL + "/", live=True)
    checked = check_real_sdp(sdp)
    assert len(checked["media"]) == 2  # the logical stream is not a stream
    session = checked["session"]
    assert "a=range:npt=now-" in session and "a=LiveStream:integer;1" in session
    assert "a=Flags:integer;7" in session
    assert f"a=control:{URL}/" in session
    assert "s=He said 'hi'X" in sdp
    title = next(a for a in session if a.startswith("a=Title:buffer;"))
    assert base64.b64decode(title.split(";", 1)[1].strip('"')) == b"He said \"hi\"\r\nX\x00"
    assert not any(a.startswith("a=Copyright") for a in session)  # empty strings are left out
    for section in checked["media"]:
        assert section["get"]["range"] == "npt=now-" and "length" not in section["get"]


def test_describe_with_a_surestream_rule_book(clip: RmFile) -> None:
    book = multirate_rulebook([20_000, 80_000])
    sdp = describe_rm(clip, url=URL, live=False, rulebooks={0: book})
    video, audio = check_real_sdp(sdp)["media"]
    rules = parse_asm_rulebook(video["get"]["ASMRuleBook"].split(";", 1)[1])
    assert [r.average_bandwidth for r in rules] == [20_000, 0, 80_000, 0]
    assert rules[0].condition == "($Bandwidth < 80000)"
    assert len(parse_asm_rulebook(audio["get"]["ASMRuleBook"].split(";", 1)[1])) == 2


def test_describe_refuses_bad_urls(clip: RmFile) -> None:
    for url in ("", "rtsp://x/a\r\nEvil: 1", "rtsp://x/\x00"):
        with pytest.raises(LocalProtocolError):
            describe_rm(clip, url=url, live=False)


# --------------------------------------------------------------------------------------------
# ASM rule books
# --------------------------------------------------------------------------------------------

HELIX_SURESTREAM = (
    '"#($Bandwidth < 67959),TimestampDelivery=T,DropByN=T,priority=9;'
    "#($Bandwidth >= 67959) && ($Bandwidth < 167959),AverageBandwidth=67959,Priority=9;"
    "#($Bandwidth >= 67959) && ($Bandwidth < 167959),"
    'AverageBandwidth=0,Priority=5,OnDepend=\\"1\\";"'
)


def test_helix_rulebook() -> None:
    rules = parse_asm_rulebook(HELIX_SURESTREAM)
    assert [r.number for r in rules] == [0, 1, 2]
    assert rules[0] == AsmRule(
        0, "($Bandwidth < 67959)", (("TimestampDelivery", "T"), ("DropByN", "T"), ("priority", "9"))
    )
    assert rules[1].condition == "($Bandwidth >= 67959) && ($Bandwidth < 167959)"
    assert rules[1].average_bandwidth == 67959
    assert rules[2].get("ondepend") == "1" and rules[0].average_bandwidth is None


@pytest.mark.parametrize(
    "text", ["AverageBandwidth;", "#(a,b;", "x=1,#($B > 1);", "a=1);", 'a="b;', "=5;"]
)
def test_bad_rulebooks(text: str) -> None:
    with pytest.raises(RealProtocolError):
        parse_asm_rulebook(text)


@given(st.text(max_size=80))
def test_rulebook_parser_raises_only_our_error(text: str) -> None:
    with contextlib.suppress(RealProtocolError):
        parse_asm_rulebook(text)


# --------------------------------------------------------------------------------------------
# Subscribe
# --------------------------------------------------------------------------------------------


def test_subscribe_from_clients() -> None:
    ffmpeg = "stream=0;rule=0,stream=0;rule=1,stream=1;rule=0,stream=1;rule=1"
    assert parse_subscribe(ffmpeg) == {0: frozenset({0, 1}), 1: frozenset({0, 1})}
    assert parse_subscribe(" stream=1; rule=2 ,stream=1;rule=3,") == {1: frozenset({2, 3})}
    assert format_subscribe(parse_subscribe(ffmpeg)) == ffmpeg


@pytest.mark.parametrize(
    "value",
    ["", ",", "stream=0", "stream=0;rule=1;x=2", "rule=0;stream=1", "stream=a;rule=1",
     "stream=0;rule=123456", "stream=0;rule=\u00b2", "stream=-1;rule=0"],
)  # fmt: skip
def test_bad_subscribe(value: str) -> None:
    with pytest.raises(RealProtocolError):
        parse_subscribe(value)


@given(st.dictionaries(st.integers(0, 99999), st.frozensets(st.integers(0, 99999), min_size=1),
                       min_size=1))  # fmt: skip
def test_subscribe_round_trip(sub: dict[int, frozenset[int]]) -> None:
    assert parse_subscribe(format_subscribe(sub)) == sub


@given(st.text(max_size=60))
def test_subscribe_parser_raises_only_our_error(text: str) -> None:
    with contextlib.suppress(RealProtocolError):
        parse_subscribe(text)
