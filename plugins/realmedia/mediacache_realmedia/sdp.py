"""Real's SDP dialect: describing a .rm file, ASM rule books, and ``Subscribe`` values.

What Real clients read (PEERS.md item 2; ffmpeg ``rtsp.c``/``rdt.c``, VLC ``real_sdpplin.c``):

* session: ``a=StreamCount:integer;N`` before any ``m=`` line (VLC sizes its stream table from
  it), ``a=IsRealDataType:integer;1`` (ffmpeg switches to RDT on it), ``a=range``;
* per stream: ``a=control:streamid=N`` (VLC matches the lowercase prefix), ``a=rtpmap:PT
  x-pn-realvideo/1000`` (ffmpeg picks its RDT handler by this name), the MDPR fields as
  ``a=Name:integer;N`` / ``a=Name:string;"..."``, ``a=OpaqueData:buffer;"BASE64"`` holding the
  MDPR type-specific data, and ``a=ASMRuleBook:string;"..."`` *after* it: ffmpeg loads the
  opaque data when it meets the rule book.

The rule book has one pair of rules per stream: rule 0 for keyframe packets carries the
stream's ``AverageBandwidth`` (ffmpeg reads only even rules, one ``AVStream`` each), rule 1 for
the other packets. The pair is Helix's "CBR RealAudio" book without its ``OnDepend="0"``
(quotes inside the quoted value are avoidable), and without conditions, so VLC's ASM rule
evaluator selects both rules at any bandwidth. A SureStream stream has one such pair per rate,
chosen by ``$Bandwidth`` conditions (:func:`multirate_rulebook`).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from mediacache.errors import LocalProtocolError
from mediacache_realmedia.errors import RealProtocolError
from mediacache_realmedia.wire.rmf import MediaProperties, RmFile

__all__ = [
    "AsmRule",
    "describe_rm",
    "format_subscribe",
    "multirate_rulebook",
    "parse_asm_rulebook",
    "parse_subscribe",
    "rulebook_for",
]

_FIRST_PAYLOAD_TYPE = 101


def _npt(ms: int) -> str:
    return f"{ms / 1000:.3f}"


def _clean(text: str) -> str:
    """Text safe inside an SDP line and a quoted value: no control characters, no quotes."""
    return "".join(ch for ch in text if ch >= " " and ch != "\x7f").replace('"', "'")


def _quoted(text: str) -> str:
    """A value for ``a=X:string;"..."``."""
    return f'"{_clean(text)}"'


def _buffer(data: bytes) -> str:
    return '"' + base64.b64encode(data).decode("ascii") + '"'


def rulebook_for(mp: MediaProperties) -> str:
    """The ASM rule book (without the SDP quotes) for one single-rate stream."""
    return (
        f"AverageBandwidth={mp.avg_bit_rate},Priority=5,PNMKeyFrameRule=T;"
        "AverageBandwidth=0,Priority=5,PNMNonKeyFrameRule=T;"
    )


def multirate_rulebook(bandwidths: Sequence[int]) -> str:
    """A SureStream rule book: one pair of rules per rate, ``bandwidths[k]`` for rules 2k, 2k+1.

    Pair k is chosen by a client whose ``$Bandwidth`` reaches its rate and not the next higher
    one (the lowest rate also below its own rate, the highest at any bandwidth above): the
    conditions of Helix's SureStream books, which VLC's ASM rule evaluator applies. ffmpeg
    ignores conditions and makes one ``AVStream`` per pair.
    """
    if not bandwidths or any(b < 0 for b in bandwidths):
        raise LocalProtocolError(f"unusable SureStream bandwidths {list(bandwidths)!r}")
    ordered = sorted(set(bandwidths))
    rules = []
    for bw in bandwidths:
        higher = [b for b in ordered if b > bw]
        terms = []
        if bw != ordered[0]:
            terms.append(f"($Bandwidth >= {bw})")
        if higher:
            terms.append(f"($Bandwidth < {higher[0]})")
        condition = f"#{' && '.join(terms)}," if terms else ""
        rules.append(f"{condition}AverageBandwidth={bw},Priority=5,PNMKeyFrameRule=T;")
        rules.append(f"{condition}AverageBandwidth=0,Priority=5,PNMNonKeyFrameRule=T;")
    return "".join(rules)


def _media_type(mime: str) -> tuple[str, str]:
    """(m= media, rtpmap encoding name) for an MDPR mime type such as video/x-pn-realvideo."""
    kind, _, sub = mime.partition("/")
    if kind not in ("audio", "video") or not sub:
        kind, sub = "application", sub or mime
    return kind, sub


def describe_rm(
    rm: RmFile, *, url: str, live: bool, rulebooks: Mapping[int, str] | None = None
) -> str:
    """The SDP a RealServer would answer DESCRIBE with for ``rm``, CRLF line endings.

    ``url`` (the DESCRIBE URL) becomes the session-level ``a=control`` with a trailing ``/``:
    stream controls are ``streamid=N``, and with the slash ffmpeg (which appends ``/``) and
    GStreamer (which resolves RFC 3986-style, replacing the last segment) both ask SETUP for
    ``<url>/streamid=N``. Logical MDPRs are not streams and are left out. ``live`` gives
    ``npt=now-`` ranges and ``a=LiveStream:integer;1`` instead of durations. ``rulebooks``
    gives the ASM rule book of a stream by stream number (a SureStream stream's, see
    :func:`multirate_rulebook`); the others get :func:`rulebook_for`'s single pair.
    """
    if any(c in url for c in "\r\n\x00") or not url:
        raise LocalProtocolError(f"unusable control URL {url!r}")
    control = url if url.endswith("/") else url + "/"
    streams = [mp for mp in rm.streams if not mp.is_logical]
    title = rm.content.title if rm.content else ""
    flags = rm.props.flags | (4 if live else 0)
    rng = "npt=now-" if live else f"npt=0-{_npt(rm.props.duration_ms)}"

    lines = [
        "v=0",
        "o=- 0 0 IN IP4 0.0.0.0",
        f"s={_clean(title) or 'RealMedia'}",
        "c=IN IP4 0.0.0.0",
        "t=0 0",
        "a=SdpplinVersion:1610641560",
        f"a=StreamCount:integer;{len(streams)}",
        f"a=control:{control}",
        f"a=Flags:integer;{flags}",
        "a=IsRealDataType:integer;1",
        f"a=range:{rng}",
    ]
    if live:
        lines.append("a=LiveStream:integer;1")
    if rm.content is not None:
        c = rm.content
        for name, value in (
            ("Title", c.title),
            ("Author", c.author),
            ("Copyright", c.copyright),
            ("Abstract", c.comment),
        ):
            if not value:
                continue
            # Helix sends these as C strings; VLC decodes them with the terminator.
            c_string = value.encode("latin-1") + b"\0"
            lines.append(f"a={name}:buffer;{_buffer(c_string)}")

    for index, mp in enumerate(streams):
        pt = _FIRST_PAYLOAD_TYPE + index
        book = (rulebooks or {}).get(mp.stream_number) or rulebook_for(mp)
        kind, encoding = _media_type(mp.mime_type)
        lines += [
            f"m={kind} 0 RTP/AVP {pt}",
            f"b=AS:{(mp.avg_bit_rate + 999) // 1000}",
            f"a=control:streamid={mp.stream_number}",
            f"a=range:{'npt=now-' if live else f'npt=0-{_npt(mp.duration_ms)}'}",
        ]
        if not live:
            lines.append(f"a=length:npt={_npt(mp.duration_ms)}")
        lines += [
            f"a=rtpmap:{pt} {encoding}/1000",
            f"a=mimetype:string;{_quoted(mp.mime_type)}",
            f"a=AvgBitRate:integer;{mp.avg_bit_rate}",
            f"a=AvgPacketSize:integer;{mp.avg_packet_size}",
            f"a=MaxBitRate:integer;{mp.max_bit_rate}",
            f"a=MaxPacketSize:integer;{mp.max_packet_size}",
            f"a=StartTime:integer;{mp.start_time_ms}",
            f"a=Preroll:integer;{mp.preroll_ms}",
            f"a=StreamName:string;{_quoted(mp.stream_name)}",
            f"a=OpaqueData:buffer;{_buffer(mp.type_specific_data)}",
            f"a=ASMRuleBook:string;{_quoted(book)}",
        ]
    return "\r\n".join(lines) + "\r\n"


# --------------------------------------------------------------------------------------------
# ASM rule books
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AsmRule:
    """One rule: its number, its ``#(...)`` condition (without ``#``) and its assignments."""

    number: int
    condition: str | None
    properties: tuple[tuple[str, str], ...]

    def get(self, name: str, default: str | None = None) -> str | None:
        """An assignment's value by case-insensitive name (Real writers mix cases)."""
        for key, value in self.properties:
            if key.lower() == name.lower():
                return value
        return default

    @property
    def average_bandwidth(self) -> int | None:
        """``AverageBandwidth`` in bits/s, as ffmpeg reads it; None when absent."""
        value = self.get("AverageBandwidth")
        if value is None or not (value.isascii() and value.isdigit()):
            return None
        return int(value)


def _split_top(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double quotes and parentheses."""
    parts, depth, quoted, start = [], 0, False, 0
    for i, ch in enumerate(text):
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
            if depth < 0:
                raise RealProtocolError(f"unbalanced ')' in ASM rule book at {i}")
        elif not quoted and depth == 0 and ch == sep:
            parts.append(text[start:i])
            start = i + 1
    if quoted or depth:
        raise RealProtocolError("unterminated quote or parenthesis in ASM rule book")
    parts.append(text[start:])
    return parts


def parse_asm_rulebook(text: str) -> list[AsmRule]:
    """Parse an ``ASMRuleBook`` value, with or without its SDP quotes (``\\"`` unescaped).

    Rules end with ``;``; a rule is ``#(condition),name=value,...`` or just assignments.
    """
    body = text.strip()
    if len(body) >= 2 and body[0] == '"' and body[-1] == '"':
        body = body[1:-1]
    body = body.replace('\\"', '"')
    rules: list[AsmRule] = []
    for raw in _split_top(body, ";"):
        raw = raw.strip()
        if not raw:
            continue
        condition: str | None = None
        props: list[tuple[str, str]] = []
        for item in _split_top(raw, ","):
            item = item.strip()
            if not item:
                continue
            if item.startswith("#"):
                if condition is not None or props:
                    raise RealProtocolError(f"misplaced condition in ASM rule {raw!r}")
                condition = item[1:].strip()
                continue
            name, eq, value = item.partition("=")
            name, value = name.strip(), value.strip()
            if not eq or not name or not value:
                raise RealProtocolError(f"ASM rule statement {item!r} is not name=value")
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            props.append((name, value))
        rules.append(AsmRule(len(rules), condition, tuple(props)))
    return rules


# --------------------------------------------------------------------------------------------
# Subscribe
# --------------------------------------------------------------------------------------------


def _int_field(text: str, name: str, entry: str) -> int:
    key, eq, value = text.strip().partition("=")
    value = value.strip()
    digits = value.isascii() and value.isdigit() and len(value) <= 5
    if key.strip().lower() != name or not eq or not digits:
        raise RealProtocolError(f"bad Subscribe entry {entry!r}: expected {name}=N")
    return int(value)


def parse_subscribe(value: str) -> dict[int, frozenset[int]]:
    """``stream=0;rule=0,stream=0;rule=1`` -> ``{0: frozenset({0, 1})}``.

    The value of ``SET_PARAMETER``'s ``Subscribe`` (or ``Unsubscribe``) header; the result is
    what a SureStream variant key is made of. Empty entries (a trailing comma) are ignored.
    """
    result: dict[int, set[int]] = {}
    for entry in value.split(","):
        if not entry.strip():
            continue
        fields = entry.split(";")
        if len(fields) != 2:
            raise RealProtocolError(f"bad Subscribe entry {entry!r}: expected stream=N;rule=M")
        stream = _int_field(fields[0], "stream", entry)
        rule = _int_field(fields[1], "rule", entry)
        result.setdefault(stream, set()).add(rule)
    if not result:
        raise RealProtocolError("empty Subscribe value")
    return {stream: frozenset(rules) for stream, rules in sorted(result.items())}


def format_subscribe(subscription: dict[int, frozenset[int]]) -> str:
    """Inverse of :func:`parse_subscribe`, streams and rules in ascending order."""
    return ",".join(
        f"stream={stream};rule={rule}"
        for stream in sorted(subscription)
        for rule in sorted(subscription[stream])
    )
