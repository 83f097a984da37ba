"""Parsers and builders for the RTSP headers a proxy has to understand (RFC 2326 §12).

Each header is a frozen dataclass with a ``build()`` that writes one canonical spelling, so a
proxy can parse what a peer sent, change one field with ``dataclasses.replace`` and send it on.
Parse errors are :class:`RemoteProtocolError` whose ``status_hint`` is the answer a server gives:
400 for malformed syntax, 461 for a Transport with nothing usable, 457 for a Range it cannot read.
Build errors (a value that would corrupt the header) are :class:`LocalProtocolError`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from mediacache.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "NptRange",
    "RtpInfo",
    "SessionHeader",
    "TransportSpec",
    "build_range",
    "build_rtp_info",
    "build_session",
    "build_transports",
    "parse_cseq",
    "parse_public",
    "parse_range",
    "parse_rtp_info",
    "parse_session",
    "parse_transports",
]

_DIGITS_RE = re.compile(r"[0-9]+")
# Characters that would break out of a header value or of one of its parameters.
_UNSAFE_VALUE_RE = re.compile(r"[\x00-\x1f\x7f;,\"]")
_UNSAFE_TEXT_RE = re.compile(r"[\x00-\x1f\x7f]")


def _split_unquoted(value: str, sep: str) -> Iterator[str]:
    """Split on ``sep`` outside double quotes (``mode="PLAY,RECORD"`` stays whole)."""
    start = 0
    quoted = False
    for i, char in enumerate(value):
        if char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            yield value[start:i]
            start = i + 1
    yield value[start:]


def _int(text: str, what: str, low: int, high: int, status: int = 400) -> int:
    text = text.strip()
    if not _DIGITS_RE.fullmatch(text) or len(text) > 12 or not low <= int(text) <= high:
        raise RemoteProtocolError(f"bad {what} {text[:40]!r}", status_hint=status)
    return int(text)


def parse_cseq(value: str) -> int:
    """Parse a CSeq value (a non-negative decimal that fits in 32 bits)."""
    return _int(value, "CSeq", 0, 0xFFFFFFFF)


def parse_public(value: str) -> list[str]:
    """Parse a Public (or Allow) list of methods; empty items are skipped."""
    return [method.strip() for method in value.split(",") if method.strip()]


# -- Transport ---------------------------------------------------------------------------------

_PROTOCOL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+\-_]*(/[A-Za-z0-9.+\-_]+)+")
_KNOWN_TRANSPORT_PARAMS = frozenset(
    {"destination", "source", "interleaved", "client_port", "server_port", "ssrc", "mode", "ttl"}
)


@dataclass(frozen=True, slots=True)
class TransportSpec:
    """One transport spec of a Transport header (RFC 2326 §12.39).

    ``protocol`` keeps the peer's spelling (``RTP/AVP``, ``RTP/AVP/TCP``, ``x-pn-tng/tcp``).
    Port and channel ranges are pairs: ``"a-b"`` gives ``(a, b)`` and a single ``"a"`` gives
    ``(a, a)``; the caller decides what a single port means (RTP usually wants ``a+1`` for RTCP).
    ``mode`` is stored without quotes. Unknown parameters stay in ``extra``, in order, with
    ``None`` for a bare flag, and are written back after the known ones.
    """

    protocol: str
    unicast: bool | None = None
    interleaved: tuple[int, int] | None = None
    client_port: tuple[int, int] | None = None
    server_port: tuple[int, int] | None = None
    ssrc: str | None = None
    mode: str | None = None
    destination: str | None = None
    source: str | None = None
    ttl: int | None = None
    extra: tuple[tuple[str, str | None], ...] = ()

    @property
    def lower_transport(self) -> Literal["UDP", "TCP"]:
        """``TCP`` when the protocol ends in ``/TCP`` (any case), else ``UDP`` (RFC default).

        A property rather than a field so ``dataclasses.replace(spec, protocol=...)`` cannot
        leave it stale.
        """
        return "TCP" if self.protocol.upper().endswith("/TCP") else "UDP"

    def build(self) -> str:
        """Canonical spelling: protocol;unicast|multicast;destination;source;interleaved;
        client_port;server_port;ssrc;mode;ttl;then extra parameters in order."""
        if not _PROTOCOL_RE.fullmatch(self.protocol):
            raise LocalProtocolError(f"illegal transport protocol {self.protocol!r}")
        parts = [self.protocol]
        if self.unicast is not None:
            parts.append("unicast" if self.unicast else "multicast")
        if self.destination is not None:
            parts.append(f"destination={_safe(self.destination, 'destination')}")
        if self.source is not None:
            parts.append(f"source={_safe(self.source, 'source')}")
        if self.interleaved is not None:
            parts.append(f"interleaved={_build_pair(self.interleaved, 255, 'interleaved')}")
        if self.client_port is not None:
            parts.append(f"client_port={_build_pair(self.client_port, 65535, 'client_port')}")
        if self.server_port is not None:
            parts.append(f"server_port={_build_pair(self.server_port, 65535, 'server_port')}")
        if self.ssrc is not None:
            parts.append(f"ssrc={_safe(self.ssrc, 'ssrc')}")
        if self.mode is not None:
            parts.append(f'mode="{_safe(self.mode, "mode", allow_comma=True)}"')
        if self.ttl is not None:
            if not 0 <= self.ttl <= 255:
                raise LocalProtocolError(f"illegal ttl {self.ttl!r}")
            parts.append(f"ttl={self.ttl}")
        for name, value in self.extra:
            parts.append(_build_extra(name, value))
        return ";".join(parts)


_PARAM_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+\-]*")
_QUOTED_RE = re.compile(r'"[^"]*"')


def _strip_quoted(value: str) -> str:
    """``value`` with quoted sections removed, to look for separators outside quotes."""
    return _QUOTED_RE.sub("", value)


def _build_extra(name: str, value: str | None) -> str:
    """Write an unknown parameter back; refuse one that would parse as something else."""
    key = name.lower()
    if not _PARAM_NAME_RE.fullmatch(name):
        raise LocalProtocolError(f"illegal extra transport parameter {name!r}")
    if value is None:
        if key in ("unicast", "multicast"):
            raise LocalProtocolError(f"{name} is a field of TransportSpec, not an extra")
        return name
    outside = _strip_quoted(value)
    if (
        key in _KNOWN_TRANSPORT_PARAMS
        or _UNSAFE_TEXT_RE.search(value)
        or any(c in outside for c in ';,"')
    ):
        raise LocalProtocolError(f"illegal extra transport parameter {name}={value!r}")
    return f"{name}={value}"


def _safe(value: str, what: str, *, allow_comma: bool = False) -> str:
    bad = _UNSAFE_TEXT_RE.search(value) or '"' in value or ";" in value
    if bad or (not allow_comma and "," in value) or not value:
        raise LocalProtocolError(f"illegal {what} {value!r}")
    return value


def _build_pair(pair: tuple[int, int], high: int, what: str) -> str:
    low_value, high_value = pair
    if not (0 <= low_value <= high and 0 <= high_value <= high):
        raise LocalProtocolError(f"illegal {what} {pair!r}")
    return str(low_value) if low_value == high_value else f"{low_value}-{high_value}"


def _parse_pair(text: str, what: str, high: int) -> tuple[int, int]:
    first, dash, second = text.partition("-")
    a = _int(first, what, 0, high)
    b = _int(second, what, 0, high) if dash else a
    return a, b


def _parse_transport(text: str) -> TransportSpec:
    params = [p.strip() for p in _split_unquoted(text, ";")]
    protocol = params[0]
    if not _PROTOCOL_RE.fullmatch(protocol):
        raise RemoteProtocolError(f"unsupported transport {protocol[:40]!r}", status_hint=461)
    fields: dict[str, object] = {}
    extra: list[tuple[str, str | None]] = []
    for param in params[1:]:
        if not param:
            continue  # "RTP/AVP;;unicast" and trailing ";" are harmless
        name, eq, value = param.partition("=")
        name = name.strip()
        value = value.strip()
        key = name.lower()
        if key in ("unicast", "multicast") and not eq:
            key, parsed = "unicast", key == "unicast"
        elif key in _KNOWN_TRANSPORT_PARAMS and eq:
            parsed = _parse_transport_param(key, value)
        else:
            if not _PARAM_NAME_RE.fullmatch(name):
                raise RemoteProtocolError(f"malformed transport parameter {param[:40]!r}")
            extra.append((name, value if eq else None))
            continue
        if key in fields:
            raise RemoteProtocolError(f"repeated transport parameter {name!r}")
        fields[key] = parsed
    return TransportSpec(protocol, extra=tuple(extra), **fields)  # type: ignore[arg-type]


def _parse_transport_param(key: str, value: str) -> object:
    if key == "interleaved":
        return _parse_pair(value, "interleaved channel", 255)
    if key in ("client_port", "server_port"):
        return _parse_pair(value, key, 65535)
    if key == "ttl":
        return _int(value, "ttl", 0, 255)
    if key == "mode":
        value = value.strip('"').strip()
    if not value or '"' in value:
        raise RemoteProtocolError(f"bad transport parameter {key}={value[:40]!r}")
    return value


def parse_transports(value: str) -> list[TransportSpec]:
    """Parse a Transport header: a comma-separated list of specs in the peer's preference order.

    Raises 461 when the list is empty or a protocol is not ``X/Y[/Z]``, 400 for bad parameters.
    """
    specs = [_parse_transport(t.strip()) for t in _split_unquoted(value, ",") if t.strip()]
    if not specs:
        raise RemoteProtocolError("empty Transport header", status_hint=461)
    return specs


def build_transports(specs: Iterable[TransportSpec]) -> str:
    return ",".join(spec.build() for spec in specs)


# -- Session -----------------------------------------------------------------------------------

_SESSION_ID_RE = re.compile(r"[^\x00-\x20\x7f;,\"]+")


@dataclass(frozen=True, slots=True)
class SessionHeader:
    """Session id and optional timeout in seconds (RFC 2326 §12.37; default 60 when absent)."""

    id: str
    timeout: int | None = None

    def build(self) -> str:
        if not _SESSION_ID_RE.fullmatch(self.id):
            raise LocalProtocolError(f"illegal session id {self.id!r}")
        if self.timeout is None:
            return self.id
        if self.timeout < 0:
            raise LocalProtocolError(f"illegal session timeout {self.timeout!r}")
        return f"{self.id};timeout={self.timeout}"


def parse_session(value: str) -> SessionHeader:
    """Parse ``id[;timeout=N]``; unknown parameters are ignored."""
    session_id, *params = (p.strip() for p in value.split(";"))
    if not _SESSION_ID_RE.fullmatch(session_id):
        raise RemoteProtocolError(f"bad session id {session_id[:40]!r}")
    timeout = None
    for param in params:
        name, eq, number = param.partition("=")
        if eq and name.strip().lower() == "timeout":
            timeout = _int(number, "session timeout", 0, 0x7FFFFFFF)
    return SessionHeader(session_id, timeout)


def build_session(session: SessionHeader) -> str:
    return session.build()


# -- Range -------------------------------------------------------------------------------------

_NPT_SEC_RE = re.compile(r"([0-9]+)(?:\.([0-9]*))?")
_NPT_HMS_RE = re.compile(r"([0-9]+):([0-9]{1,2}):([0-9]{1,2})(?:\.([0-9]*))?")


@dataclass(frozen=True, slots=True)
class NptRange:
    """An npt Range (RFC 2326 §3.6) in seconds; ``live`` means the start is ``now``.

    ``npt=0-`` is (0.0, None, False): open-ended, but not by itself live.
    """

    start: float | None = None
    end: float | None = None
    live: bool = False

    def build(self) -> str:
        """``npt=0.000-`` style, millisecond precision."""
        if self.live:
            if self.start is not None:
                raise LocalProtocolError("a live (now-) range has no numeric start")
            head = "now"
        elif self.start is None:
            if self.end is None:
                raise LocalProtocolError("an npt range needs a start or an end")
            head = ""
        else:
            head = _fmt_npt(self.start)
        tail = "" if self.end is None else _fmt_npt(self.end)
        return f"npt={head}-{tail}"


def _fmt_npt(seconds: float) -> str:
    if not seconds >= 0 or seconds == float("inf"):
        raise LocalProtocolError(f"illegal npt time {seconds!r}")
    return f"{seconds:.3f}"


def _parse_npt_time(text: str) -> float:
    if match := _NPT_SEC_RE.fullmatch(text):
        whole, frac = match.groups()
        return float(f"{whole}.{frac or 0}")
    if match := _NPT_HMS_RE.fullmatch(text):
        hours, minutes, secs, frac = match.groups()
        if int(minutes) > 59 or int(secs) > 59:
            raise RemoteProtocolError(f"bad npt time {text[:40]!r}", status_hint=457)
        return int(hours) * 3600 + int(minutes) * 60 + float(f"{secs}.{frac or 0}")
    raise RemoteProtocolError(f"bad npt time {text[:40]!r}", status_hint=457)


def parse_range(value: str) -> NptRange:
    """Parse an npt Range (``npt=0-``, ``npt=10.5-20``, ``npt=now-``, ``npt=-20``, h:mm:ss.f).

    Parameters after ``;`` (``time=``) are ignored. Other units (``clock=``, ``smpte=``) and
    malformed ranges raise with status 457 (Invalid Range).
    """
    spec = value.split(";", 1)[0].strip()
    unit, eq, rng = spec.partition("=")
    if not eq or unit.strip().lower() != "npt":
        raise RemoteProtocolError(f"unsupported range {spec[:40]!r}", status_hint=457)
    first, dash, second = rng.strip().partition("-")
    first, second = first.strip(), second.strip()
    if not dash or not (first or second):
        raise RemoteProtocolError(f"bad npt range {rng[:40]!r}", status_hint=457)
    live = first.lower() == "now"
    start = None if live or not first else _parse_npt_time(first)
    end = _parse_npt_time(second) if second else None
    if start is not None and end is not None and end < start:
        raise RemoteProtocolError(f"npt range ends before it starts: {rng[:40]!r}", status_hint=457)
    return NptRange(start, end, live)


def build_range(rng: NptRange) -> str:
    return rng.build()


# -- RTP-Info ----------------------------------------------------------------------------------

_RTP_INFO_SPLIT_RE = re.compile(r",\s*(?=url\s*=)", re.IGNORECASE)
_RTP_INFO_PARAM_RE = re.compile(r"(seq|rtptime)\s*=\s*([0-9]+)\s*", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class RtpInfo:
    """One stream of an RTP-Info header (RFC 2326 §12.33)."""

    url: str
    seq: int | None = None
    rtptime: int | None = None

    def build(self) -> str:
        url = self.url
        if (
            not url
            or _UNSAFE_TEXT_RE.search(url)
            or " " in url
            or '"' in url
            or (";" in url and _RTP_INFO_PARAM_RE.fullmatch(url.rsplit(";", 1)[-1].strip()))
            or _RTP_INFO_SPLIT_RE.search(url)
        ):
            raise LocalProtocolError(f"illegal RTP-Info url {url!r}")
        parts = [f"url={self.url}"]
        if self.seq is not None:
            if not 0 <= self.seq <= 0xFFFF:
                raise LocalProtocolError(f"illegal RTP-Info seq {self.seq!r}")
            parts.append(f"seq={self.seq}")
        if self.rtptime is not None:
            if not 0 <= self.rtptime <= 0xFFFFFFFF:
                raise LocalProtocolError(f"illegal RTP-Info rtptime {self.rtptime!r}")
            parts.append(f"rtptime={self.rtptime}")
        return ";".join(parts)


def _parse_rtp_info_item(item: str) -> RtpInfo:
    name, eq, rest = item.partition("=")
    if not eq or name.strip().lower() != "url":
        raise RemoteProtocolError(f"RTP-Info item without url: {item[:60]!r}")
    # The URL itself may contain ';', so peel known parameters off the end.
    pieces = rest.split(";")
    seq = rtptime = None
    while len(pieces) > 1 and (match := _RTP_INFO_PARAM_RE.fullmatch(pieces[-1].strip())):
        pieces.pop()
        name, number = match.group(1).lower(), match.group(2)
        if name == "seq":
            seq = _int(number, "RTP-Info seq", 0, 0xFFFF)
        else:
            rtptime = _int(number, "RTP-Info rtptime", 0, 0xFFFFFFFF)
    url = ";".join(pieces).strip()
    if len(url) >= 2 and url[0] == url[-1] == '"':  # RTSP 2.0 quotes the URL
        url = url[1:-1]
    if not url:
        raise RemoteProtocolError(f"RTP-Info item with empty url: {item[:60]!r}")
    return RtpInfo(url, seq, rtptime)


def parse_rtp_info(value: str) -> list[RtpInfo]:
    """Parse RTP-Info; items are split on a comma followed by ``url=``, so commas inside a URL
    survive, and parameters are peeled off the end, so semicolons inside a URL survive too."""
    items = [i.strip() for i in _RTP_INFO_SPLIT_RE.split(value.strip()) if i.strip()]
    if not items:
        raise RemoteProtocolError("empty RTP-Info header")
    return [_parse_rtp_info_item(item) for item in items]


def build_rtp_info(infos: Iterable[RtpInfo]) -> str:
    return ", ".join(info.build() for info in infos)


def parse_basic_credentials(value: str) -> tuple[str, str] | None:
    """(user, password) of an ``Authorization: Basic`` value (RFC 7617); None for any other
    scheme or a malformed token (the caller answers 401 again)."""
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    return (user, password) if sep else None
