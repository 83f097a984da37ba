"""RTSP/1.0 messages (RFC 2326) and interleaved frames: events, serialisers and a sans-I/O reader.

The reader follows h11's shape: ``receive_data(bytes)`` then ``next_event()`` until it returns
``None``. It never touches a socket, so the same code serves the client side of an origin
connection and the server side of a player connection, and tests can feed it any chunking.

Text is decoded as UTF-8 with ``surrogateescape``: valid UTF-8 becomes ordinary ``str``, and
anything else (Latin-1 ``Server`` headers from old cameras) survives a parse/build round trip
byte for byte, which a proxy needs more than pretty strings.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from mediacache.errors import LocalProtocolError, RemoteProtocolError
from mediacache.rtsp.interleaved import FRAME_HEADER, build_interleaved

__all__ = [
    "REASONS",
    "Event",
    "Headers",
    "InterleavedFrame",
    "Request",
    "Response",
    "RtspReader",
    "build_message",
    "build_request",
    "build_response",
    "make_response",
]

_ENCODING = "utf-8"
_ERRORS = "surrogateescape"

# RFC 7230 token: what a method or a header name may contain.
_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# What may not appear inside a header value or a reason phrase (CR/LF would split the message).
_BAD_VALUE_RE = re.compile(r"[\x00\r\n]")
# A request URI: visible characters only.
_URI_RE = re.compile(r"[^\x00-\x20\x7f]+")
_RTSP_VERSION_RE = re.compile(r"RTSP/1\.[0-9]+")
_ANY_VERSION_RE = re.compile(r"[A-Za-z][A-Za-z0-9-]*/[0-9]+\.[0-9]+")
_STATUS_RE = re.compile(r"[0-9]{3}")
_DIGITS_RE = re.compile(r"[0-9]{1,19}")

REASONS: dict[int, str] = {
    100: "Continue",
    200: "OK",
    201: "Created",
    250: "Low on Storage Space",
    300: "Multiple Choices",
    301: "Moved Permanently",
    302: "Moved Temporarily",
    303: "See Other",
    304: "Not Modified",
    305: "Use Proxy",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    406: "Not Acceptable",
    407: "Proxy Authentication Required",
    408: "Request Time-out",
    410: "Gone",
    411: "Length Required",
    412: "Precondition Failed",
    413: "Request Entity Too Large",
    414: "Request-URI Too Large",
    415: "Unsupported Media Type",
    451: "Parameter Not Understood",
    452: "Conference Not Found",
    453: "Not Enough Bandwidth",
    454: "Session Not Found",
    455: "Method Not Valid in This State",
    456: "Header Field Not Valid for Resource",
    457: "Invalid Range",
    458: "Parameter Is Read-Only",
    459: "Aggregate operation not allowed",
    460: "Only aggregate operation allowed",
    461: "Unsupported transport",
    462: "Destination unreachable",
    500: "Internal Server Error",
    501: "Not Implemented",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Time-out",
    505: "RTSP Version not supported",
    551: "Option not supported",
}


def _decode(raw: bytes) -> str:
    return raw.decode(_ENCODING, _ERRORS)


def _encode(text: str) -> bytes:
    return text.encode(_ENCODING, _ERRORS)


class Headers:
    """Immutable, ordered multi-dict of ``(name, value)`` pairs; names compare case-insensitively.

    Order and repeated names are kept because a proxy forwards headers it does not understand
    and some peers care about both (GStreamer sends two ``User-Agent`` lines to Real servers).
    Equality is order-sensitive, case-insensitive on names and exact on values.
    """

    __slots__ = ("_keys", "_pairs")

    _pairs: tuple[tuple[str, str], ...]
    _keys: tuple[str, ...]

    def __init__(self, pairs: Iterable[tuple[str, str]] = ()) -> None:
        items = tuple((str(name), str(value)) for name, value in pairs)
        object.__setattr__(self, "_pairs", items)
        object.__setattr__(self, "_keys", tuple(name.lower() for name, _ in items))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Headers is immutable; use with_(), add() or without()")

    def get(self, name: str, default: str | None = None) -> str | None:
        """Value of the first header called ``name``, else ``default``."""
        key = name.lower()
        for k, (_, value) in zip(self._keys, self._pairs, strict=True):
            if k == key:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name``, in order."""
        key = name.lower()
        return [v for k, (_, v) in zip(self._keys, self._pairs, strict=True) if k == key]

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._keys

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._pairs)

    def items(self) -> list[tuple[str, str]]:
        return list(self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)

    def with_(self, name: str, value: str) -> Headers:
        """Replace every ``name`` header by one ``name: value`` at the first one's position."""
        key = name.lower()
        out: list[tuple[str, str]] = []
        placed = False
        for k, pair in zip(self._keys, self._pairs, strict=True):
            if k != key:
                out.append(pair)
            elif not placed:
                out.append((name, value))
                placed = True
        if not placed:
            out.append((name, value))
        return Headers(out)

    def without(self, name: str) -> Headers:
        key = name.lower()
        return Headers(p for k, p in zip(self._keys, self._pairs, strict=True) if k != key)

    def add(self, name: str, value: str) -> Headers:
        """Append ``name: value`` even when ``name`` is already present."""
        return Headers((*self._pairs, (name, value)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._keys == other._keys and all(
            a[1] == b[1] for a, b in zip(self._pairs, other._pairs, strict=True)
        )

    def __hash__(self) -> int:
        return hash(tuple(zip(self._keys, (v for _, v in self._pairs), strict=True)))

    def __repr__(self) -> str:
        return f"Headers({list(self._pairs)!r})"


def _cseq_of(headers: Headers) -> int | None:
    value = headers.get("CSeq")
    if value is None:
        return None
    value = value.strip()
    return int(value) if _DIGITS_RE.fullmatch(value) else None


@dataclass(frozen=True, slots=True)
class Request:
    """An RTSP request. ``uri`` is kept verbatim (``*`` for ``OPTIONS *``)."""

    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    version: str = "RTSP/1.0"

    @property
    def cseq(self) -> int | None:
        """The CSeq, or None when missing or not a number (the server layer decides)."""
        return _cseq_of(self.headers)


@dataclass(frozen=True, slots=True)
class Response:
    """An RTSP response; ``reason`` is kept verbatim so a proxy can forward it unchanged."""

    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    version: str = "RTSP/1.0"

    @property
    def cseq(self) -> int | None:
        """The CSeq, or None when missing or not a number."""
        return _cseq_of(self.headers)


@dataclass(frozen=True, slots=True)
class InterleavedFrame:
    """One ``$``-framed packet (RTP, RTCP or RDT) carried inside the RTSP connection."""

    channel: int
    payload: bytes


Event = Request | Response | InterleavedFrame


def make_response(
    status: int,
    cseq: int | None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
    reason: str | None = None,
) -> Response:
    """Build a Response with CSeq first (when given) and the RFC 2326 reason phrase by default."""
    pairs: list[tuple[str, str]] = [] if cseq is None else [("CSeq", str(cseq))]
    pairs.extend(headers)
    if reason is None:
        reason = REASONS.get(status, "Unknown")
    return Response(status, reason, Headers(pairs), body)


def _head_lines(start: str, headers: Headers, body: bytes) -> bytes:
    if body:
        headers = headers.with_("Content-Length", str(len(body)))
    elif "Content-Length" in headers and headers.get("Content-Length") != "0":
        # An empty body with a stale non-zero length would make the peer wait forever.
        headers = headers.with_("Content-Length", "0")
    parts = [start]
    for name, value in headers:
        if not _TOKEN_RE.fullmatch(name):
            raise LocalProtocolError(f"illegal header name {name!r}")
        if _BAD_VALUE_RE.search(value):
            raise LocalProtocolError(f"illegal character in header {name}: {value!r}")
        parts.append(f"{name}: {value}")
    parts.append("\r\n")
    return _encode("\r\n".join(parts)) + body


def _check_version(version: str) -> None:
    if not _ANY_VERSION_RE.fullmatch(version):
        raise LocalProtocolError(f"illegal protocol version {version!r}")


def build_request(req: Request) -> bytes:
    """Serialise ``req``; a non-empty body gets an exact Content-Length, replacing any other."""
    if not _TOKEN_RE.fullmatch(req.method):
        raise LocalProtocolError(f"illegal method {req.method!r}")
    if not _URI_RE.fullmatch(req.uri):
        raise LocalProtocolError(f"illegal request URI {req.uri!r}")
    _check_version(req.version)
    return _head_lines(f"{req.method} {req.uri} {req.version}", req.headers, req.body)


def build_response(resp: Response) -> bytes:
    """Serialise ``resp``; a non-empty body gets an exact Content-Length, replacing any other."""
    if not 100 <= resp.status <= 999:
        raise LocalProtocolError(f"illegal status code {resp.status!r}")
    if _BAD_VALUE_RE.search(resp.reason):
        raise LocalProtocolError(f"illegal reason phrase {resp.reason!r}")
    _check_version(resp.version)
    start = f"{resp.version} {resp.status} {resp.reason}"
    return _head_lines(start, resp.headers, resp.body)


def build_message(event: Event) -> bytes:
    """Serialise any event the reader produces (interleaved frames included)."""
    if isinstance(event, Request):
        return build_request(event)
    if isinstance(event, Response):
        return build_response(event)
    return build_interleaved(event.channel, event.payload)


# Reader states.
_BOUNDARY = 0  # between messages: "$" starts a frame, CR/LF are skipped, anything else a head
_HEAD = 1  # collecting the start line and header lines
_BODY = 2  # waiting for Content-Length bytes

_MAX_CONTENT_LENGTH_DIGITS = 19


class RtspReader:
    """Incremental parser for one direction of an RTSP connection.

    Theory of operation. Bytes go into one ``bytearray``; ``_pos`` marks what has been consumed
    and the consumed prefix is dropped once per ``receive_data`` (CPython deletes a bytearray's
    head in O(1) amortised), so no byte is copied more than a constant number of times. At a
    message boundary a ``$`` introduces an interleaved frame, parsed with one ``struct`` call:
    this is the hot path. Anything else starts a message head, consumed line by line; ``_scan``
    remembers how far an incomplete line was already searched, so data trickling in one byte at a
    time costs linear, not quadratic, time. Every limit is checked on incomplete input too: a line
    with no newline is rejected as soon as it exceeds ``max_line``, a head as soon as it has too
    many lines, a body as soon as its Content-Length is known. The first error poisons the reader.

    Both requests and responses are accepted in either direction, since RTSP servers send
    requests too (GET_PARAMETER, ANNOUNCE, REDIRECT). A message without Content-Length has no
    body (RFC 2326 §4.3 reads differently for responses, but no interleaving peer can close the
    connection to end a body).
    """

    __slots__ = (
        "_body_len",
        "_buf",
        "_error",
        "_lines",
        "_pos",
        "_scan",
        "_start",
        "_state",
        "max_body",
        "max_headers",
        "max_line",
    )

    def __init__(
        self, *, max_line: int = 8192, max_headers: int = 100, max_body: int = 1_048_576
    ) -> None:
        self.max_line = max_line
        self.max_headers = max_headers
        self.max_body = max_body
        self._buf = bytearray()
        self._pos = 0
        self._scan = 0
        self._state = _BOUNDARY
        self._start: Request | Response | None = None
        self._lines: list[tuple[str, str]] = []
        self._body_len = 0
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as (part of) an event."""
        return len(self._buf) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Append bytes from the peer; call :meth:`next_event` until it returns None."""
        if self._error is not None:
            raise self._error
        pos = self._pos
        if pos:
            del self._buf[:pos]
            self._scan -= pos
            self._pos = 0
        self._buf += data

    def events(self) -> Iterator[Event]:
        """Yield every complete event currently buffered."""
        while (event := self.next_event()) is not None:
            yield event

    def next_event(self) -> Event | None:
        """Return the next complete event, or None when more data is needed."""
        if self._error is not None:
            raise self._error
        try:
            if self._state == _BOUNDARY:
                buf = self._buf
                pos = self._pos
                end = len(buf)
                while pos < end:
                    byte = buf[pos]
                    if byte == 0x24:  # "$": interleaved frame, the hot path
                        if end - pos < 4:
                            break
                        _, channel, length = FRAME_HEADER.unpack_from(buf, pos)
                        stop = pos + 4 + length
                        if stop > end:
                            break
                        self._pos = stop
                        return InterleavedFrame(channel, bytes(buf[pos + 4 : stop]))
                    if byte != 0x0D and byte != 0x0A:  # stray CR/LF between messages: skip
                        self._state = _HEAD
                        self._scan = pos
                        self._lines = []
                        self._start = None
                        break
                    pos += 1
                self._pos = pos
                if self._state == _BOUNDARY:
                    return None
            if self._state == _HEAD:
                return self._read_head()
            return self._read_body()
        except RemoteProtocolError as exc:
            self._error = exc
            raise

    # -- message head -----------------------------------------------------------------------

    def _line_too_long(self) -> RemoteProtocolError:
        if self._start is None and not self._buf.startswith(b"RTSP/", self._pos):
            return RemoteProtocolError(
                f"request line longer than {self.max_line} bytes", status_hint=414
            )
        what = "status line" if self._start is None else "header line"
        return RemoteProtocolError(f"{what} longer than {self.max_line} bytes")

    def _read_head(self) -> Event | None:
        buf = self._buf
        while True:
            newline = buf.find(b"\n", self._scan)
            pos = self._pos
            if newline < 0:
                # +1: the CR of a CRLF may already be here while its LF is not.
                if len(buf) - pos > self.max_line + 1:
                    raise self._line_too_long()
                self._scan = len(buf)
                return None
            stop = newline - 1 if newline > pos and buf[newline - 1] == 0x0D else newline
            if stop - pos > self.max_line:
                raise self._line_too_long()
            line = bytes(buf[pos:stop])
            self._pos = self._scan = newline + 1
            if self._start is None:
                self._start = _parse_start_line(line)
            elif line:
                if len(self._lines) >= self.max_headers:
                    raise RemoteProtocolError(f"more than {self.max_headers} header lines")
                self._lines.append(_parse_header_line(line))
            else:
                return self._end_of_head()

    def _end_of_head(self) -> Event | None:
        headers = Headers(self._lines)
        self._lines = []
        start = self._start
        assert start is not None
        if isinstance(start, Request):
            start = Request(start.method, start.uri, headers, b"", start.version)
        else:
            start = Response(start.status, start.reason, headers, b"", start.version)
        self._start = start
        self._body_len = _content_length(headers, self.max_body)
        self._state = _BODY
        return self._read_body()

    def _read_body(self) -> Event | None:
        length = self._body_len
        pos = self._pos
        if len(self._buf) - pos < length:
            return None
        start = self._start
        assert start is not None
        self._state = _BOUNDARY
        self._start = None
        if not length:
            return start
        self._pos = pos + length
        body = bytes(self._buf[pos : pos + length])
        if isinstance(start, Request):
            return Request(start.method, start.uri, start.headers, body, start.version)
        return Response(start.status, start.reason, start.headers, body, start.version)


def _parse_start_line(raw: bytes) -> Request | Response:
    line = _decode(raw)
    if line.startswith("RTSP/"):
        version, _, rest = line.partition(" ")
        status, _, reason = rest.partition(" ")
        if not _STATUS_RE.fullmatch(status) or _BAD_VALUE_RE.search(reason):
            raise RemoteProtocolError(f"malformed status line {line[:100]!r}")
        if not _RTSP_VERSION_RE.fullmatch(version):
            raise RemoteProtocolError(f"unsupported version {version[:20]!r}", status_hint=505)
        return Response(int(status), reason, Headers(), b"", version)
    parts = line.split(" ")
    if len(parts) != 3:
        raise RemoteProtocolError(f"malformed request line {line[:100]!r}")
    method, uri, version = parts
    if not _TOKEN_RE.fullmatch(method) or not _URI_RE.fullmatch(uri):
        raise RemoteProtocolError(f"malformed request line {line[:100]!r}")
    if not _RTSP_VERSION_RE.fullmatch(version):
        if _ANY_VERSION_RE.fullmatch(version):
            raise RemoteProtocolError(f"unsupported version {version[:20]!r}", status_hint=505)
        raise RemoteProtocolError(f"malformed request line {line[:100]!r}")
    return Request(method, uri, Headers(), b"", version)


def _parse_header_line(raw: bytes) -> tuple[str, str]:
    if raw[:1] in (b" ", b"\t"):
        raise RemoteProtocolError("obsolete header line folding is not accepted")
    line = _decode(raw)
    name, colon, value = line.partition(":")
    if not colon or not _TOKEN_RE.fullmatch(name):
        raise RemoteProtocolError(f"malformed header line {line[:100]!r}")
    value = value.strip(" \t")
    if _BAD_VALUE_RE.search(value):
        raise RemoteProtocolError(f"illegal character in header {name}")
    return name, value


def _content_length(headers: Headers, max_body: int) -> int:
    values = headers.get_all("Content-Length")
    if not values:
        return 0
    if len(set(values)) != 1:
        raise RemoteProtocolError("conflicting Content-Length headers")
    value = values[0]
    if not value.isascii() or not value.isdigit():
        raise RemoteProtocolError(f"bad Content-Length {value[:30]!r}")
    if len(value) > _MAX_CONTENT_LENGTH_DIGITS or int(value) > max_body:
        raise RemoteProtocolError(
            f"body of {value[:30]} bytes exceeds the {max_body}-byte limit", status_hint=413
        )
    return int(value)
