"""RTSP URLs (RFC 2326 §3.2): parsing, control-URL resolution and prefix rebasing.

A caching proxy rewrites URLs all the time (the player's URL to the origin's, the origin's
Content-Base and control URLs back to the proxy's), so rewriting must not touch anything it does
not have to: paths, queries and percent-encoding are kept verbatim.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from mediacache.errors import RemoteProtocolError

__all__ = ["DEFAULT_PORTS", "RtspUrl", "parse_url", "rebase_url", "resolve_url"]

DEFAULT_PORTS: dict[str, int] = {"rtsp": 554, "rtspu": 554, "rtsps": 322}

_URL_RE = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://([^/?#]*)(.*)", re.DOTALL)
_ABSOLUTE_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f]")
_REG_NAME_RE = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=]+")
_IPV6_RE = re.compile(r"[0-9A-Fa-f:.]+(%25[A-Za-z0-9\-._~%]+)?")
_USERINFO_RE = re.compile(r"[A-Za-z0-9\-._~%!$&'()*+,;=:]*")


@dataclass(frozen=True, slots=True)
class RtspUrl:
    """A parsed RTSP URL.

    ``host`` has no brackets (``::1``); ``path`` starts with ``/`` (an empty path becomes ``/``)
    and includes any query verbatim. ``user`` and ``password`` are kept percent-encoded, exactly
    as they appeared, so ``str()`` reproduces them.
    """

    scheme: str
    host: str
    port: int | None
    path: str
    user: str | None = None
    password: str | None = None

    def with_default_port(self, port: int) -> RtspUrl:
        """This URL with ``port`` filled in when it has none."""
        return self if self.port is not None else replace(self, port=port)

    def effective_port(self, default: int | None = None) -> int:
        """The explicit port, else ``default``, else the scheme's default (554, rtsps 322)."""
        if self.port is not None:
            return self.port
        return default if default is not None else DEFAULT_PORTS[self.scheme]

    def without_credentials(self) -> RtspUrl:
        return replace(self, user=None, password=None)

    @property
    def netloc(self) -> str:
        """``host[:port]`` with IPv6 in brackets, never credentials."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        """``scheme://netloc``: what identifies the server, without path or credentials."""
        return f"{self.scheme}://{self.netloc}"

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        return f"{self.scheme}://{userinfo}{self.netloc}{self.path}"


def _bad(s: str, why: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"bad RTSP URL {s[:200]!r}: {why}")


def _split(s: str) -> tuple[RtspUrl, str]:
    """Parse ``s``; also return the raw path (possibly empty) for prefix arithmetic."""
    match = _URL_RE.fullmatch(s)
    if match is None or _FORBIDDEN_RE.search(s):
        raise _bad(s, "not an absolute URL without spaces")
    scheme, authority, raw_path = match.groups()
    scheme = scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise _bad(s, f"scheme {scheme!r} is not rtsp, rtspu or rtsps")
    user = password = None
    userinfo, at, hostport = authority.rpartition("@")
    if at:
        if not _USERINFO_RE.fullmatch(userinfo):
            raise _bad(s, "bad user info")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    if hostport.startswith("["):
        host, bracket, rest = hostport[1:].partition("]")
        if not bracket or not _IPV6_RE.fullmatch(host) or ":" not in host:
            raise _bad(s, "bad IPv6 literal")
        if rest and not rest.startswith(":"):
            raise _bad(s, "junk after IPv6 literal")
        port_text = rest[1:] if rest else None
    else:
        host, colon, port_text = hostport.partition(":")
        if not colon:
            port_text = None
        if not _REG_NAME_RE.fullmatch(host):
            raise _bad(s, "bad host")
    port = None
    if port_text:  # "host:" means no port, as in RFC 3986
        if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
            raise _bad(s, "bad port")
        port = int(port_text)
    path = raw_path if raw_path.startswith("/") else "/" + raw_path
    return RtspUrl(scheme, host, port, path, user, password), raw_path


def parse_url(s: str) -> RtspUrl:
    """Parse an absolute ``rtsp://``, ``rtspu://`` or ``rtsps://`` URL (400 on anything else)."""
    return _split(s)[0]


def resolve_url(base: str, ref: str) -> str:
    """Resolve an SDP ``a=control`` value against the base (Content-Base, else request URL).

    ``*`` (and an empty control) means the base itself; an absolute URL is returned as is.
    Anything else is *appended* to the base with exactly one ``/`` between them, even when the
    base does not end in ``/`` and even when the control starts with ``/``. RFC 2326 C.1.1 asks
    for RFC 1808 resolution, which would replace the base's last segment, but GStreamer, ffmpeg
    and live555 all append, and origins are written against them, so we do the same. A query in
    the base stays where it is (``...?a=1/trackID=1``), which again is what those clients send.
    """
    ref = ref.strip()
    if not ref or ref == "*":
        return base
    if _ABSOLUTE_RE.match(ref):
        return ref
    if base.endswith("/"):
        return base + ref.lstrip("/") if ref.startswith("/") else base + ref
    return base + ref if ref.startswith("/") else f"{base}/{ref}"


def _same_server(a: RtspUrl, b: RtspUrl) -> bool:
    return (
        a.scheme == b.scheme
        and a.host.lower() == b.host.lower()
        and a.effective_port() == b.effective_port()
    )


def rebase_url(url: str, from_prefix: str, to_prefix: str) -> str | None:
    """Replace ``from_prefix`` at the start of ``url`` by ``to_prefix``; None if it does not match.

    Scheme, host and port compare case-insensitively, and a missing port equals the scheme's
    default (``rtsp://h/`` matches ``rtsp://H:554/``). The path is a plain string prefix, so the
    mapping is reversible. Credentials in ``url`` are dropped; those in ``to_prefix`` are kept.
    An unparsable ``url`` (a relative control, say) gives None; an unparsable ``from_prefix``
    raises, since it is our own configuration.
    """
    prefix, prefix_path = _split(from_prefix)
    try:
        parsed, raw_path = _split(url)
    except RemoteProtocolError:
        return None
    if not _same_server(parsed, prefix):
        return None
    path = raw_path if raw_path.startswith("/") or not prefix_path else parsed.path
    if not path.startswith(prefix_path):
        return None
    return to_prefix + path[len(prefix_path) :]
