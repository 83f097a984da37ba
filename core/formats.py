"""The format registry: what a format plugin contributes, looked up by format name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mediacache.config import FormatConfig

if TYPE_CHECKING:
    from mediacache.sansio.layer import Layer, SessionContext


@dataclass(frozen=True, slots=True)
class OriginOptions:
    """``mediacache origin NAME --root DIR --listen HOST:PORT ...``"""

    root: Path
    listen: str
    udp_ports: str = ""
    max_sessions: int | None = None
    """Refuse sessions beyond this many (RTSP 453, MMS error): licence limits made testable."""
    auth: str | None = None
    """``user:pass``: require these credentials (RTSP Basic/Digest, MMS's own)."""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class FormatSpec:
    """One streaming format: its name, its defaults and the factories the core calls.

    ``make_layer`` builds the sans-I/O protocol layer that serves one client control
    connection. ``reference_origin``, where the format has no open-source origin server, is the
    plugin's own origin (``mediacache origin NAME``): given the :class:`OriginOptions` it
    returns the layer factory for one client connection of the origin. The core runs it like
    the proxy (same listener, UDP sockets, timers and playout scheduler), so the origin is
    sans-I/O too; state shared by its connections (the session count) lives in the factory.
    """

    name: str
    version: str
    description: str
    protocols: tuple[str, ...]
    config_type: type[FormatConfig]
    make_layer: Callable[[SessionContext], Layer]
    reference_origin: Callable[[OriginOptions], Callable[[SessionContext], Layer]] | None = None
    origin_schemes: tuple[str, ...] = ("rtsp",)
    http_tunnel: bool = False
    """Does the listener also take RTSP-over-HTTP tunnels (Apple's GET/POST pair with an
    ``x-sessioncookie``)? For RTSP formats; see :mod:`mediacache.server.httptunnel`."""
    prefetch: Callable[[str, str, int], Awaitable[Any]] | None = None
    """``prefetch(url, proxy_host, proxy_port)``: play ``url`` through the proxy's own
    listener to fill the cache (``mediacache cache prefetch``); returns a result with
    ``ok``, ``detail`` and ``seconds``. The core ships one for RTSP formats."""

    @property
    def defaults(self) -> FormatConfig:
        return self.config_type()


@dataclass
class FormatRegistry:
    """Filled by the plugins' ``mediacache_register_formats`` at start."""

    _formats: dict[str, FormatSpec] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)
    current_plugin: str = "<unknown>"

    def add(self, spec: FormatSpec) -> None:
        if spec.name in self._formats:
            raise ValueError(
                f"format {spec.name!r} is registered twice "
                f"(by {self.owners[spec.name]} and {self.current_plugin})"
            )
        self._formats[spec.name] = spec
        self.owners[spec.name] = self.current_plugin

    def remove_owned_by(self, plugin: str) -> None:
        for name in [n for n, owner in self.owners.items() if owner == plugin]:
            del self._formats[name]
            del self.owners[name]

    def get(self, name: str) -> FormatSpec | None:
        return self._formats.get(name)

    def __getitem__(self, name: str) -> FormatSpec:
        return self._formats[name]

    def __contains__(self, name: object) -> bool:
        return name in self._formats

    def __iter__(self) -> Iterator[FormatSpec]:
        return iter(sorted(self._formats.values(), key=lambda s: s.name))

    def __len__(self) -> int:
        return len(self._formats)

    def names(self) -> set[str]:
        return set(self._formats)
