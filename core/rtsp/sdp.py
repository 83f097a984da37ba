"""SDP (RFC 8866) as a proxy needs it: raw lines kept in order, a few accessors, and edits.

The proxy mostly forwards an origin's SDP and only rewrites ``a=control`` URLs, so the model is
deliberately shallow: every line is kept verbatim (codec parameters like ``a=fmtp`` are never
re-serialised), and helpers read or replace the handful of attributes RTSP cares about.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mediacache.errors import LocalProtocolError, RemoteProtocolError
from mediacache.rtsp.headers import NptRange, parse_range

__all__ = [
    "MediaDescription",
    "SessionDescription",
    "build_sdp",
    "parse_sdp",
    "rewrite_controls",
]

_LINE_RE = re.compile(r"[a-zA-Z]=[^\x00\r\n]*")
_ABSOLUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")


def _attributes(lines: Iterable[str], name: str) -> list[str]:
    """Values of ``a=name:value`` (and ``""`` for a flag ``a=name``)."""
    out = []
    for line in lines:
        if line.startswith("a="):
            attr, colon, value = line[2:].partition(":")
            if attr == name:
                out.append(value if colon else "")
    return out


def _with_control(lines: tuple[str, ...], value: str, first_editable: int) -> tuple[str, ...]:
    """Put ``a=control:value`` where the first one was (dropping others), else at the end."""
    new = f"a=control:{value}"
    if not _LINE_RE.fullmatch(new):
        raise LocalProtocolError(f"illegal control value {value!r}")
    out: list[str] = []
    placed = False
    for i, line in enumerate(lines):
        if i >= first_editable and (line == "a=control" or line.startswith("a=control:")):
            if not placed:
                out.append(new)
                placed = True
            continue
        out.append(line)
    if not placed:
        out.append(new)
    return tuple(out)


def _range_of(lines: Iterable[str]) -> NptRange | None:
    for value in _attributes(lines, "range"):
        try:
            return parse_range(value)
        except RemoteProtocolError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class MediaDescription:
    """One media section; ``lines[0]`` is its ``m=`` line."""

    lines: tuple[str, ...]

    @property
    def media_type(self) -> str:
        """``video``, ``audio``, ``application``... (first word of the m= line)."""
        return self.lines[0][2:].split(" ", 1)[0]

    @property
    def control(self) -> str | None:
        """The first ``a=control`` value, or None."""
        values = _attributes(self.lines, "control")
        return values[0] if values else None

    @property
    def range(self) -> NptRange | None:
        """This media's npt ``a=range``, or None when absent or not npt."""
        return _range_of(self.lines)

    def attributes(self, name: str) -> list[str]:
        return _attributes(self.lines, name)

    def with_control(self, value: str) -> MediaDescription:
        return MediaDescription(_with_control(self.lines, value, 1))


@dataclass(frozen=True, slots=True)
class SessionDescription:
    """Session-level lines (``v=0`` ... before the first ``m=``) and the media sections."""

    session_lines: tuple[str, ...]
    media: tuple[MediaDescription, ...] = ()

    @property
    def control(self) -> str | None:
        """The session-level (aggregate) ``a=control`` value, or None."""
        values = _attributes(self.session_lines, "control")
        return values[0] if values else None

    def with_control(self, value: str) -> SessionDescription:
        return SessionDescription(_with_control(self.session_lines, value, 0), self.media)

    def attributes(self, name: str) -> list[str]:
        return _attributes(self.session_lines, name)

    @property
    def range(self) -> NptRange | None:
        """Session-level npt ``a=range``; None when absent or in another unit."""
        return _range_of(self.session_lines)

    def _ranges(self) -> list[NptRange]:
        ranges = [self.range, *(m.range for m in self.media)]
        return [r for r in ranges if r is not None]

    @property
    def is_live(self) -> bool:
        """True when a range (session or media level) is ``npt=now-``.

        ``npt=0-`` is open-ended but not live by itself (GStreamer says it for files too), and
        no range at all means "unknown", which is False here; see :attr:`range_is_open`.
        """
        return any(r.live for r in self._ranges())

    @property
    def range_is_open(self) -> bool:
        """True when the session range (else any media range) has no end: live or unknown."""
        session = self.range
        if session is not None:
            return session.end is None
        return any(r.end is None for r in self._ranges())


def parse_sdp(text: bytes | str) -> SessionDescription:
    """Parse SDP leniently: LF or CRLF, blank lines ignored; every other line must be ``x=...``."""
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", "surrogateescape")
    text = text.rstrip("\x00")  # some old servers NUL-terminate the body
    session: list[str] = []
    media: list[list[str]] = []
    for raw in text.split("\n"):
        line = raw.removesuffix("\r")
        if not line.strip():
            continue
        if not _LINE_RE.fullmatch(line):
            raise RemoteProtocolError(f"bad SDP line {line[:80]!r}")
        if line.startswith("m="):
            media.append([line])
        elif media:
            media[-1].append(line)
        else:
            session.append(line)
    if not session and not media:
        raise RemoteProtocolError("empty SDP")
    return SessionDescription(tuple(session), tuple(MediaDescription(tuple(m)) for m in media))


def build_sdp(sd: SessionDescription) -> bytes:
    """Serialise with CRLF line endings, as RFC 8866 requires."""
    lines = [*sd.session_lines]
    for m in sd.media:
        if not m.lines or not m.lines[0].startswith("m="):
            raise LocalProtocolError("a media description must start with an m= line")
        lines.extend(m.lines)
    for line in lines:
        if not _LINE_RE.fullmatch(line):
            raise LocalProtocolError(f"illegal SDP line {line!r}")
    return ("".join(f"{line}\r\n" for line in lines)).encode("utf-8", "surrogateescape")


def rewrite_controls(sd: SessionDescription, fn: Callable[[str], str]) -> SessionDescription:
    """Apply ``fn`` to every absolute ``a=control`` URL; ``*`` and relative ones stay as they are
    because they resolve against Content-Base, which the caller rewrites separately."""

    def rewrite(lines: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for line in lines:
            if line.startswith("a=control:"):
                value = line[len("a=control:") :]
                if _ABSOLUTE_RE.match(value.strip()):
                    line = f"a=control:{fn(value.strip())}"
            out.append(line)
        return tuple(out)

    return SessionDescription(
        rewrite(sd.session_lines), tuple(MediaDescription(rewrite(m.lines)) for m in sd.media)
    )
