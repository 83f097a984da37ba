"""Where an MMS player's request goes: forward (the player names the origin) or a reverse route.

MMS has no absolute request URL like RTSP. A player names the server in two places: the
``Host:`` part of its Connect string (``NSPlayer/7.0.0.1956; {GUID}; Host: origin.example``) and
the ``fileName`` of OpenFile, which is a path (``clip.wmv``, ``/clip.wmv``) or, from a player
configured with an MMS proxy, may be a whole URL (``mms://origin.example/clip.wmv``). The target
is only known at OpenFile, so the proxy answers Connect itself and opens the origin connection
then. The order of the rules (pure functions, so tests need no server):

1. A ``fileName`` that is a URL (``mms``, ``mmst``, ``mmsu``) names its origin (forward mode),
   unless its port is this listener's and its path matches a route (then that route), or it
   names this very listener (refused: no route).
2. A path matching a route's prefix (longest first) goes to that route's origin (reverse mode).
3. Otherwise the ``Host:`` of Connect names the origin (forward mode) on ``origin_port`` (or the
   port it gives), unless that is this very listener (a player that named the proxy itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from mediacache.config import Route

__all__ = ["MMS_SCHEMES", "Target", "host_hint", "resolve_target"]

MMS_SCHEMES = ("mms", "mmst", "mmsu")


@dataclass(frozen=True, slots=True)
class Target:
    """The origin of one session, and what to ask it for."""

    host: str
    port: int
    path: str
    """The origin's file name, without the leading slash (as ffmpeg and VLC send it)."""
    route: Route | None = None
    """The reverse route that matched (None in forward mode)."""

    @property
    def url(self) -> str:
        """The origin URL: the cache key's URL and what a parent proxy is asked for."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"mms://{host}:{self.port}/{self.path}"


def host_hint(subscriber_name: str) -> str | None:
    """The ``Host:`` value of a Connect string (``HOST`` or ``HOST:PORT``), None if absent."""
    for part in subscriber_name.split(";"):
        name, sep, value = part.strip().partition(":")
        if sep and name.strip().lower() == "host" and value.strip():
            return value.strip()
    return None


def _split_hostport(value: str, default_port: int) -> tuple[str, int] | None:
    try:
        parts = urlsplit(f"//{value}")
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname:
        return None
    return parts.hostname, port if port is not None else default_port


def _reverse(path: str, routes: Sequence[Route], format_name: str, origin_port: int) -> (
    Target | None
):
    best: Route | None = None
    for route in routes:
        if (
            route.format == format_name
            and path.startswith(route.prefix)
            and (best is None or len(route.prefix) > len(best.prefix))
        ):
            best = route
    if best is None:
        return None
    origin = urlsplit(best.origin)
    try:
        port = origin.port or origin_port
    except ValueError:
        return None
    if not origin.hostname:
        return None
    rest = origin.path.lstrip("/") + path[len(best.prefix):]
    return Target(origin.hostname, port, rest, best)


def resolve_target(
    file_name: str,
    hint: str | None,
    *,
    routes: Sequence[Route],
    format_name: str,
    listen_port: int,
    local_host: str | None,
    origin_port: int,
    forward: bool,
) -> Target | str:
    """The target of an OpenFile (see the module docstring), or why there is none."""
    if "://" in file_name:
        try:
            url = urlsplit(file_name)
            port = url.port
        except ValueError:
            return "bad URL in the file name"
        if url.scheme.lower() not in MMS_SCHEMES or not url.hostname:
            return "not an MMS URL"
        path = url.path or "/"
        if url.query:
            path += "?" + url.query
        port = port or origin_port
        if port == listen_port:
            target = _reverse(path, routes, format_name, origin_port)
            if target is not None:
                return target
            if local_host is None or url.hostname in (local_host, "localhost"):
                return "no route for this path"
        if not forward:
            return "forward proxying is disabled"
        return Target(url.hostname, port, path.lstrip("/"))
    path = "/" + file_name.lstrip("/")
    target = _reverse(path, routes, format_name, origin_port)
    if target is not None:
        return target
    if hint is None:
        return "no route for this path"
    hostport = _split_hostport(hint, origin_port)
    if hostport is None:
        return "bad Host in Connect"
    host, port = hostport
    if port == listen_port and (local_host is None or host in (local_host, "localhost")):
        return "no route for this path"
    if not forward:
        return "forward proxying is disabled"
    return Target(host, port, path.lstrip("/"))
